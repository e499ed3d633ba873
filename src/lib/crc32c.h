/* SPDX-License-Identifier: MIT */
/*
 * crc32c: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum
 * of every DLQ record. Internal to the library.
 *
 * mb__crc32c(crc, p, n) continues a running checksum the way zlib's crc32()
 * does: start with 0, and crc32c(crc32c(0, a), b) == crc32c(0, a || b). The
 * check value of "123456789" is 0xE3069283.
 *
 * The software path is slicing-by-8 over tables built once (thread-safe, via
 * pthread_once); on x86-64 CPUs with SSE 4.2 the crc32 instruction is used
 * instead. Both give identical results (tested). Any thread.
 */
#ifndef MUDBUS_CRC32C_H
#define MUDBUS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t mb__crc32c(uint32_t crc, const void *p, size_t n);

/* The portable implementation alone, so tests can compare the two paths. */
uint32_t mb__crc32c_sw(uint32_t crc, const void *p, size_t n);

#endif
