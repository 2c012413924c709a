/* cxr/mem.h — the one growable-array helper every module uses. */
#ifndef CXR_MEM_H
#define CXR_MEM_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Makes room for element `n` (0-based) of an array of `elem`-byte elements
 * whose capacity is *cap: doubles it (from 16) until n fits, never past
 * `max` elements (0: no cap but size_t overflow). False, with *arr and *cap
 * unchanged, when out of memory or n >= max (the hard cap that STYLE.md asks
 * of growable buffers). */
bool cxr_grow(void **arr, size_t *cap, size_t n, size_t elem, size_t max);

#ifdef __cplusplus
}
#endif
#endif
