# ST NUCLEO-F446RE (STM32F446RE: 512 KB flash at 0x08000000, 128 KB SRAM at
# 0x20000000, up to 180 MHz).  Builds an ELF to flash (st-flash, STM32CubeProgrammer,
# openocd); output is stubbed until you fill in board_write() with your UART.
BOARD_SRCS := $(BOARD_DIR)/startup.c
LDSCRIPT   := $(BOARD_DIR)/stm32f446re.ld
SPECS      := --specs=nano.specs --specs=nosys.specs
BOARD_RUNS := no
