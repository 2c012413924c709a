/* check_common_wake.c — the wake-up both doors' threads wait on
 * (cxr/wake.h, issue 12: the plugin waited on the wall clock): a signal
 * after the sequence read is never lost, a signal from another thread ends
 * a long wait, a deadline already past and a stop return at once. Nothing
 * here depends on the machine's speed: every wait that must end is ended by
 * a state (signal, stop, past deadline), never by elapsed time. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "cxr/wake.h"
#include "test_util.h"

static struct cxr_wake w;
static atomic_bool stop;
static atomic_int phase;

static void *signaller(void *arg)
{
    (void)arg;
    while (atomic_load(&phase) == 0) /* until the waiter has read the sequence */
        sched_yield();
    cxr_wake_signal(&w);
    return NULL;
}

START_TEST(test_wake)
{
    cxr_wake_init(&w);
    atomic_store(&stop, false);
    uint64_t seen = cxr_wake_seq(&w);
    /* a signal between reading the sequence and waiting is not lost */
    cxr_wake_signal(&w);
    cxr_wake_wait(&w, seen, cxr_wake_now_ms() + 3600 * 1000, &stop);
    ck_assert_uint_eq(cxr_wake_seq(&w), seen + 1);
    /* a deadline already past returns without a signal */
    seen = cxr_wake_seq(&w);
    cxr_wake_wait(&w, seen, cxr_wake_now_ms() - 1000, &stop);
    ck_assert_uint_eq(cxr_wake_seq(&w), seen);
    /* a signal from another thread ends a wait whose deadline is an hour away */
    atomic_store(&phase, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, signaller, NULL), 0);
    seen = cxr_wake_seq(&w);
    atomic_store(&phase, 1);
    while (cxr_wake_seq(&w) == seen)
        cxr_wake_wait(&w, seen, cxr_wake_now_ms() + 3600 * 1000, &stop);
    pthread_join(t, NULL);
    ck_assert_uint_eq(cxr_wake_seq(&w), seen + 1);
    /* stop returns at once */
    atomic_store(&stop, true);
    cxr_wake_wait(&w, cxr_wake_seq(&w), cxr_wake_now_ms() + 3600 * 1000, &stop);
    cxr_wake_destroy(&w);
}
END_TEST

static Suite *wake_suite(void)
{
    Suite *s = suite_create("common_wake");
    TCase *tc = tcase_create("wake");
    tcase_add_test(tc, test_wake);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cxr_test_run(wake_suite()); }
