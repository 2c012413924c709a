/* arena.h — where a plan's buffers sit in its graph's one activation
 * arena, the same for every backend (as ggml keeps its allocator out of
 * the backends): buffers whose live ranges (the steps that touch them)
 * overlap never share bytes; the others reuse them. */
#ifndef CXR_NN_ARENA_H
#define CXR_NN_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One buffer of a plan. `place` is the backend's: 0 means "in the arena",
 * any other value a buffer that lives elsewhere (the caller's input or
 * output, ...) and is not placed. */
struct cxr_nn_buf {
    size_t size, off;
    int32_t first, last; /* steps that touch it (inclusive); -1 none yet */
    int32_t place;
};

/* Gives every arena buffer of bufs[0..n-1] an offset, a multiple of `align`
 * (a power of two): largest first, each at the lowest offset that does not
 * overlap a placed buffer whose live range intersects its own. A buffer no
 * step touches is skipped when `skip_unused`. Returns the bytes of arena
 * used. Out of memory for its bookkeeping, it lays the buffers end to end
 * (correct, only larger). Any thread; touches only bufs. */
size_t cxr_nn_arena_place(struct cxr_nn_buf *bufs, int32_t n, size_t align, bool skip_unused);

/* `size` rounded up to `align` (a power of two). */
static inline size_t cxr_nn_arena_round(size_t size, size_t align)
{
    return (size + align - 1) & ~(align - 1);
}

#endif
