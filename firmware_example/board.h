/* board.h: the two things main.c needs from a board.
 *
 * Each folder boards/<board>/ implements them together with its startup code
 * (vector table, reset handler, fault handlers) and its linker script.
 */
#ifndef K2M_BOARD_H
#define K2M_BOARD_H

/* Write n bytes of text to the board's console (semihosting under QEMU, a
 * UART on a real board).  Never allocates. */
void board_write(const char *text, unsigned n);

#endif /* K2M_BOARD_H */
