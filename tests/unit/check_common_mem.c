/* check_common_mem.c — the one growable-array helper (cxr_grow, issue 12
 * step 5): room for element n, doubling, the hard cap, overflow refused,
 * the array unchanged on refusal. */
#include <stdint.h>
#include <stdlib.h>

#include "cxr/mem.h"
#include "test_util.h"

START_TEST(test_grow)
{
    int *v = NULL;
    size_t cap = 0;
    for (size_t n = 0; n < 1000; n++) {
        ck_assert(cxr_grow((void **)&v, &cap, n, sizeof *v, 0));
        ck_assert_uint_gt(cap, n);
        v[n] = (int)n;
    }
    ck_assert_uint_lt(cap, 2048); /* doubling, not one by one or wildly */
    for (size_t n = 0; n < 1000; n++)
        ck_assert_int_eq(v[n], (int)n);
    /* the hard cap: element 1000 of a 1000-element array is refused */
    int *before = v;
    size_t cap_before = cap;
    ck_assert(!cxr_grow((void **)&v, &cap, cap, sizeof *v, cap));
    ck_assert_ptr_eq(v, before);
    ck_assert_uint_eq(cap, cap_before);
    /* a cap that is not a power of two is reached exactly */
    int *w = NULL;
    size_t wc = 0;
    ck_assert(cxr_grow((void **)&w, &wc, 99, sizeof *w, 100));
    ck_assert_uint_eq(wc, 100);
    ck_assert(!cxr_grow((void **)&w, &wc, 100, sizeof *w, 100));
    /* sizes that would overflow size_t are refused before any allocation */
    char *z = NULL;
    size_t zc = 0;
    ck_assert(!cxr_grow((void **)&z, &zc, SIZE_MAX / 8, 16, 0));
    ck_assert_ptr_null(z);
    ck_assert(!cxr_grow((void **)&z, &zc, 0, 0, 0));
    free(v);
    free(w);
}
END_TEST

static Suite *mem_suite(void)
{
    Suite *s = suite_create("common_mem");
    TCase *tc = tcase_create("grow");
    tcase_add_test(tc, test_grow);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(mem_suite()); }
