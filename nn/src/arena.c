/* arena.c — buffer placement in a graph's arena, for every backend
 * (arena.h). */
#include <stdlib.h>

#include "arena.h"

static bool placeable(const struct cxr_nn_buf *b, bool skip_unused)
{
    return b->place == 0 && !(skip_unused && b->first < 0);
}

size_t cxr_nn_arena_place(struct cxr_nn_buf *bufs, int32_t n, size_t align, bool skip_unused)
{
    int32_t *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    bool *placed = calloc((size_t)(n > 0 ? n : 1), sizeof *placed);
    size_t top = 0;
    if (!order || !placed) { /* no memory to be clever: end to end */
        for (int32_t i = 0; i < n; i++) {
            if (!placeable(&bufs[i], skip_unused))
                continue;
            bufs[i].off = top;
            top += cxr_nn_arena_round(bufs[i].size, align);
        }
        goto done;
    }
    for (int32_t i = 0; i < n; i++)
        order[i] = i;
    for (int32_t i = 1; i < n; i++) { /* insertion sort by size, largest first */
        int32_t k = order[i], j = i - 1;
        while (j >= 0 && bufs[order[j]].size < bufs[k].size) {
            order[j + 1] = order[j];
            j--;
        }
        order[j + 1] = k;
    }
    for (int32_t oi = 0; oi < n; oi++) {
        struct cxr_nn_buf *b = &bufs[order[oi]];
        if (!placeable(b, skip_unused))
            continue;
        size_t size = cxr_nn_arena_round(b->size, align), off = 0;
        for (bool moved = true; moved;) {
            moved = false;
            for (int32_t j = 0; j < n; j++) {
                const struct cxr_nn_buf *o = &bufs[j];
                if (!placed[j] || o->last < b->first || o->first > b->last)
                    continue;
                size_t osz = cxr_nn_arena_round(o->size, align);
                if (off < o->off + osz && o->off < off + size) {
                    off = o->off + osz;
                    moved = true;
                }
            }
        }
        b->off = off;
        placed[order[oi]] = true;
        if (off + size > top)
            top = off + size;
    }
done:
    free(order);
    free(placed);
    return top;
}
