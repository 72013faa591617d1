"""C code generation for the streaming step (fp32 and int8), see docs/mcu.md."""
