# QEMU's mps2-an386: a Cortex-M4 with FPU; output and exit through semihosting
# (newlib's rdimon library).
BOARD_SRCS := $(BOARD_DIR)/startup.c
LDSCRIPT   := $(BOARD_DIR)/mps2-an386.ld
SPECS      := --specs=nano.specs --specs=rdimon.specs
BOARD_RUNS := yes
