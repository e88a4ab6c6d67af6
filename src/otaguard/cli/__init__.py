"""The thin command-line shell over the library: parse, call, print."""
