"""Bare-metal firmware around the generated library: vector table, startup, semihosting I/O,
SysTick instruction counting and stack painting, plus the linker script.

Under ``qemu-system-arm -icount shift=0`` every instruction advances the virtual clock by
1 ns, so SysTick ticks (24-bit, CPU clock, overflow counted in its interrupt) measure
instructions; the firmware calibrates ticks per instruction with a loop of known length.
"""

from __future__ import annotations

FIRMWARE_C = r"""/* Generated QEMU firmware: streams input.f32 through emg_model_step. */
#include <stdint.h>
#include <string.h>
#include "emg_model.h"

extern uint32_t _estack, _sidata, _sdata, _edata, _sbss, _ebss, _stack_limit;
int main(void);

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define CPACR (*(volatile uint32_t *)0xE000ED88u)

static volatile uint32_t systick_wraps;

static int semihost(int op, void *arg) {
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static void sh_exit(int ok) {
    semihost(0x18, (void *)(ok ? 0x20026u : 0x20023u)); /* SYS_EXIT: ApplicationExit | error */
    for (;;) {
    }
}

static void sh_puts(const char *s) { semihost(0x04, (void *)s); }

static int sh_open(const char *name, int mode) {
    uint32_t args[3] = {(uint32_t)name, (uint32_t)mode, (uint32_t)strlen(name)};
    return semihost(0x01, args);
}

static int sh_write(int fd, const void *buf, uint32_t len) {
    uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, len};
    return semihost(0x05, args); /* bytes NOT written */
}

static int sh_read(int fd, void *buf, uint32_t len) {
    uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, len};
    return semihost(0x06, args); /* bytes NOT read */
}

void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    CPACR |= 0xFu << 20; /* enable the FPU (CP10, CP11) */
    __asm__ volatile("dsb\n\tisb");
    sh_exit(main() == 0);
}

void Default_Handler(void) {
    sh_puts("unexpected exception\n");
    sh_exit(0);
}

void SysTick_Handler(void) { ++systick_wraps; }

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, 0, 0, 0, 0, Default_Handler,
    Default_Handler, 0, Default_Handler, SysTick_Handler};

static uint64_t ticks(void) {
    uint32_t hi, lo;
    do {
        hi = systick_wraps;
        lo = SYST_CVR;
    } while (hi != systick_wraps);
    return ((uint64_t)hi << 24) + (0xFFFFFFu - lo);
}

/* 2 * n instructions (subs + bne) */
static void __attribute__((noinline)) spin(uint32_t n) {
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
}

static float in_buf[EMG_MODEL_INPUT_SIZE];
static float out_buf[EMG_MODEL_NUM_CLASSES];
static uint32_t counts[4];

#define PAINT 0xA5A5A5A5u

int main(void) {
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7; /* enable, interrupt, processor clock */
    spin(1000); /* let the first reload happen: CVR reads 0 until then */
    uint64_t t0 = ticks();
    spin(1000000);
    uint64_t calib = ticks() - t0; /* ticks for 2e6 instructions (+ call overhead) */
    int fin = sh_open("input.f32", 1), fout = sh_open("output.f32", 5);
    int fcnt = sh_open("counts.u32", 5);
    if (fin < 0 || fout < 0 || fcnt < 0) {
        sh_puts("semihosting open failed\n");
        return 1;
    }
    /* paint the free stack below this frame to measure emg_model_step's high-water mark */
    uint32_t here;
    uint32_t *limit = &_stack_limit, *top = (uint32_t *)((uint32_t)&here - 64u);
    for (uint32_t *p = limit; p < top; ++p) *p = PAINT;
    emg_model_reset();
    counts[0] = (uint32_t)calib;
    sh_write(fcnt, counts, 4);
    while (sh_read(fin, in_buf, sizeof in_buf) == 0) {
        uint64_t a = ticks();
        emg_model_step(in_buf, out_buf);
        uint64_t b = ticks();
        counts[0] = (uint32_t)(b - a);
        if (sh_write(fout, out_buf, sizeof out_buf) != 0 || sh_write(fcnt, counts, 4) != 0) {
            sh_puts("semihosting write failed\n");
            return 1;
        }
    }
    uint32_t *p = limit;
    while (p < top && *p == PAINT) ++p;
    counts[0] = 0xFFFFFFFFu; /* marker, then the stack bytes used below main's frame */
    counts[1] = (uint32_t)top - (uint32_t)p;
    sh_write(fcnt, counts, 8);
    return 0;
}
"""

LINKER_SCRIPT = """\
/* Generated: code in FLASH, data and bss in RAM, stack at the top of RAM. */
ENTRY(Reset_Handler)
MEMORY
{{
  FLASH (rx) : ORIGIN = {flash_origin:#x}, LENGTH = {flash_length}
  RAM (rwx)  : ORIGIN = {ram_origin:#x}, LENGTH = {ram_length}
}}
_estack = ORIGIN(RAM) + LENGTH(RAM);
SECTIONS
{{
  .isr_vector : {{ KEEP(*(.isr_vector)) }} > FLASH
  .text : {{ *(.text*) *(.glue_7) *(.glue_7t) KEEP(*(.init)) KEEP(*(.fini)) }} > FLASH
  .rodata : {{ . = ALIGN(4); *(.rodata*) . = ALIGN(4); }} > FLASH
  .ARM.exidx : {{ *(.ARM.exidx*) }} > FLASH
  _sidata = LOADADDR(.data);
  .data : {{ . = ALIGN(4); _sdata = .; *(.data*) . = ALIGN(4); _edata = .; }} > RAM AT > FLASH
  .bss (NOLOAD) : {{ . = ALIGN(4); _sbss = .; *(.bss*) *(COMMON) . = ALIGN(4); _ebss = .; }} > RAM
  _stack_limit = _ebss;
  ASSERT(_estack - _ebss >= {min_stack}, "less than {min_stack} bytes left for the stack")
}}
"""
