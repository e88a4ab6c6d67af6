"""The device side: flash, OTP fuses, boot control, bootloader, install flow, power loss.

A model exact enough to test what an update system promises a device: never
run unsigned code, never return to an older security epoch, never brick on
power loss. See docs/device.md.
"""
