/* Startup for the ST NUCLEO-F446RE (STM32F446RE, Cortex-M4 with FPU).
 *
 * Vector table (16 core exceptions + 97 STM32F446 interrupts), reset handler
 * (FPU on, SystemInit(), .data copied, .bss zeroed, main()), fault handlers
 * that print their name and stop, and the console.
 *
 * Console: board_write() is a stub.  Put your UART code in it (on the Nucleo,
 * USART2 on PA2/PA3 goes to the ST-LINK virtual COM port).  _write() forwards
 * to it, so printf() works too once it does something.
 *
 * Clock: the chip starts on its 16 MHz HSI.  For 180 MHz, supply your own
 * SystemInit() (e.g. STM32CubeF4's system_stm32f4xx.c and SystemClock_Config():
 * PLL from HSI/HSE, 5 flash wait states, over-drive on); the weak one here
 * leaves the clock as it is.
 */
#include <stdint.h>

#include "board.h"

extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __StackTop;
extern int main(void);

void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);
void MemManage_Handler(void);
void BusFault_Handler(void);
void UsageFault_Handler(void);
void SystemInit(void);
int _write(int fd, const char *buf, int len);
__attribute__((noreturn)) void _exit(int code);

void board_write(const char *text, unsigned n)
{
    /* Retarget hook: send the n bytes to your UART here, e.g. with the HAL
     *     HAL_UART_Transmit(&huart2, (const uint8_t *)text, n, HAL_MAX_DELAY);
     * or by polling USART2->SR (TXE) and writing USART2->DR byte by byte. */
    (void)text;
    (void)n;
}

/* newlib's printf() ends here (nosys.specs provides the other stubs). */
int _write(int fd, const char *buf, int len)
{
    (void)fd;
    if (len > 0) {
        board_write(buf, (unsigned)len);
    }
    return len;
}

/* Nowhere to return to on a microcontroller: stop here (a debugger sees the
 * exit status in r0). */
__attribute__((noreturn)) void _exit(int code)
{
    volatile int status = code;
    (void)status;
    for (;;) {
        __asm__ volatile("wfi");
    }
}

__attribute__((weak)) void SystemInit(void)
{
}

__attribute__((noreturn)) void Reset_Handler(void)
{
    uint32_t *src = &__etext;
    uint32_t *dst;

    /* FPU: full access to CP10 and CP11 (CPACR), before any float instruction. */
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20);
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    for (dst = &__data_start__; dst < &__data_end__;) {
        *dst++ = *src++;
    }
    for (dst = &__bss_start__; dst < &__bss_end__;) {
        *dst++ = 0;
    }
    SystemInit();
    _exit(main());
}

static __attribute__((noreturn)) void fault(const char *name)
{
    static const char head[] = "\nk2m-fault: ";
    unsigned n = 0;
    while (name[n] != '\0') {
        ++n;
    }
    board_write(head, sizeof head - 1);
    board_write(name, n);
    board_write("\n", 1);
    _exit(134);
}

void HardFault_Handler(void)  { fault("HardFault"); }
void MemManage_Handler(void)  { fault("MemManage"); }
void BusFault_Handler(void)   { fault("BusFault"); }
void UsageFault_Handler(void) { fault("UsageFault"); }
void Default_Handler(void)    { fault("unexpected interrupt"); }

typedef void (*vector_t)(void);

#define STM32F446_IRQS 97

__attribute__((section(".vectors"), used))
const vector_t vector_table[16 + STM32F446_IRQS] = {
    (vector_t)(uintptr_t)&__StackTop,
    Reset_Handler,
    Default_Handler,      /* NMI */
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    0, 0, 0, 0,
    Default_Handler,      /* SVCall */
    Default_Handler,      /* DebugMonitor */
    0,
    Default_Handler,      /* PendSV */
    Default_Handler,      /* SysTick */
    [16 ... 16 + STM32F446_IRQS - 1] = Default_Handler,  /* WWDG ... SPDIF-RX, FMPI2C1 */
};
