/* cxr/wake.h — the wake-up both doors' worker threads wait on: a sequence
 * number bumped by every signal, so that a signal between "look for work"
 * and "wait" is never lost (read the sequence first, then look, then wait
 * for a signal after it). Deadlines are wall-clock milliseconds (due times
 * are stored as such), but the wait itself runs on the monotonic clock, at
 * most a minute at a time: a step of the wall clock cannot make a thread
 * sleep for hours.
 */
#ifndef CXR_WAKE_H
#define CXR_WAKE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cxr_wake {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    uint64_t seq;
};

void cxr_wake_init(struct cxr_wake *w);
void cxr_wake_destroy(struct cxr_wake *w);
/* Wakes every waiter. Any thread. */
void cxr_wake_signal(struct cxr_wake *w);
/* The current sequence: read it before looking for work. */
uint64_t cxr_wake_seq(struct cxr_wake *w);
/* Returns after a signal later than `seen` (at once if one came already),
 * at `deadline_ms` (CLOCK_REALTIME ms), after a minute, or once *stop is
 * true (the stopper signals too). Spurious returns are allowed: callers
 * look again. */
void cxr_wake_wait(struct cxr_wake *w, uint64_t seen, int64_t deadline_ms, const atomic_bool *stop);
/* CLOCK_REALTIME in milliseconds. */
int64_t cxr_wake_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif
