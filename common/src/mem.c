/* mem.c — growable arrays (cxr/mem.h). */
#include <stdint.h>
#include <stdlib.h>

#include "cxr/mem.h"

bool cxr_grow(void **arr, size_t *cap, size_t n, size_t elem, size_t max)
{
    if (n < *cap)
        return true;
    if (elem == 0)
        return false;
    size_t limit = SIZE_MAX / elem;
    if (max == 0 || max > limit)
        max = limit;
    if (n >= max)
        return false;
    size_t ncap = *cap ? *cap : 16;
    while (ncap <= n)
        ncap = ncap > max / 2 ? max : ncap * 2;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = ncap;
    return true;
}
