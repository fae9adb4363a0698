/* Startup for QEMU's mps2-an386 (Cortex-M4 with FPU) with semihosting.
 *
 * Vector table, reset handler (FPU on, .data copied, .bss zeroed, main()),
 * fault handlers that print their name and exit with status 134, and the
 * console: board_write() goes through newlib's rdimon (semihosting SYS_WRITE),
 * the exit status reaches the host through SYS_EXIT_EXTENDED, so
 * `qemu-system-arm ... -semihosting-config enable=on,target=native` exits with
 * main()'s return value.
 */
#include <stdint.h>

#include "board.h"

extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__, __StackTop;
extern int main(void);
/* newlib rdimon's stdio set-up.  A weak reference: it is linked (and called)
 * only when your code uses stdio, so the default build has no malloc at all. */
extern void initialise_monitor_handles(void) __attribute__((weak));

void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);
void MemManage_Handler(void);
void BusFault_Handler(void);
void UsageFault_Handler(void);
__attribute__((noreturn)) void _exit(int code);

/* Semihosting call: bkpt 0xAB with the operation in r0 and its argument in r1. */
static int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

#define SYS_OPEN 0x01
#define SYS_WRITE0 0x04
#define SYS_WRITE 0x05
#define SYS_EXIT_EXTENDED 0x20
#define ADP_Stopped_ApplicationExit 0x20026

/* Exit QEMU with `code` as its exit status (semihosting v2 SYS_EXIT_EXTENDED).
 * Also what newlib's exit()/abort() end in. */
__attribute__((noreturn)) void _exit(int code)
{
    uint32_t block[2];
    block[0] = ADP_Stopped_ApplicationExit;
    block[1] = (uint32_t)code;
    for (;;) {
        semihost(SYS_EXIT_EXTENDED, block);
    }
}

/* The host's stdout: the special file ":tt" opened for writing (mode 4, "w").
 * board_write() talks to semihosting directly rather than through newlib's
 * stdio, so nothing here can reach malloc(); printf() from your own code still
 * works (newlib rdimon, set up by initialise_monitor_handles() at reset). */
static int console = -1;

void board_write(const char *text, unsigned n)
{
    uint32_t block[3];
    if (console < 0) {
        block[0] = (uint32_t)(uintptr_t)":tt";
        block[1] = 4;   /* "w" */
        block[2] = 3;   /* strlen(":tt") */
        console = semihost(SYS_OPEN, block);
        if (console < 0) {
            return;
        }
    }
    while (n > 0) {
        int left;
        block[0] = (uint32_t)console;
        block[1] = (uint32_t)(uintptr_t)text;
        block[2] = n;
        left = semihost(SYS_WRITE, block);   /* bytes NOT written */
        if (left < 0 || (unsigned)left >= n) {
            return;
        }
        text += n - (unsigned)left;
        n = (unsigned)left;
    }
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
    if (initialise_monitor_handles) {
        initialise_monitor_handles();
    }
    _exit(main());
}

static __attribute__((noreturn)) void fault(const char *name)
{
    semihost(SYS_WRITE0, "\nk2m-fault: ");
    semihost(SYS_WRITE0, name);
    semihost(SYS_WRITE0, " (unhandled exception)\n");
    _exit(134);
}

void HardFault_Handler(void)  { fault("HardFault"); }
void MemManage_Handler(void)  { fault("MemManage"); }
void BusFault_Handler(void)   { fault("BusFault"); }
void UsageFault_Handler(void) { fault("UsageFault"); }
void Default_Handler(void)    { fault("unexpected interrupt"); }

typedef void (*vector_t)(void);

__attribute__((section(".vectors"), used))
const vector_t vector_table[16 + 32] = {
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
    [16 ... 16 + 31] = Default_Handler,  /* external interrupts: none enabled */
};
