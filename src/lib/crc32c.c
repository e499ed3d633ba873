/* SPDX-License-Identifier: MIT */
/*
 * crc32c: CRC-32C, slicing-by-8 in software and the SSE 4.2 crc32 instruction
 * where the CPU has it (see crc32c.h). The tables are built on first use
 * under pthread_once; the hardware check runs once the same way.
 */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void build_tables(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
    }
}

uint32_t mb__crc32c_sw(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&table_once, build_tables);
    const unsigned char *b = p;
    crc = ~crc;
    while (n > 0 && ((uintptr_t)b & 7) != 0) {
        crc = table[0][(crc ^ *b++) & 0xff] ^ (crc >> 8);
        n--;
    }
    while (n >= 8) {
        /* Bytes are combined explicitly, so the result does not depend on
         * the host's byte order. */
        uint32_t lo = crc ^ ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                             (uint32_t)b[3] << 24);
        crc = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
              table[4][lo >> 24] ^ table[3][b[4]] ^ table[2][b[5]] ^ table[1][b[6]] ^
              table[0][b[7]];
        b += 8;
        n -= 8;
    }
    while (n > 0) {
        crc = table[0][(crc ^ *b++) & 0xff] ^ (crc >> 8);
        n--;
    }
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_HW 1

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t c = ~crc;
    while (n > 0 && ((uintptr_t)b & 7) != 0) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *b++);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, b, 8); /* x86 is little-endian, as the CRC expects */
        c = __builtin_ia32_crc32di(c, w);
        b += 8;
        n -= 8;
    }
    while (n > 0) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *b++);
        n--;
    }
    return ~(uint32_t)c;
}

static int hw_ok;
static pthread_once_t hw_once = PTHREAD_ONCE_INIT;

static void detect_hw(void)
{
    __builtin_cpu_init();
    hw_ok = __builtin_cpu_supports("sse4.2");
}
#endif

uint32_t mb__crc32c(uint32_t crc, const void *p, size_t n)
{
#ifdef HAVE_HW
    pthread_once(&hw_once, detect_hw);
    if (hw_ok)
        return crc32c_hw(crc, p, n);
#endif
    return mb__crc32c_sw(crc, p, n);
}
