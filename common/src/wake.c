/* wake.c — wake-ups on a monotonic clock (cxr/wake.h). */
#include <errno.h>
#include <time.h>

#include "cxr/wake.h"

#define MAX_WAIT_MS 60000

int64_t cxr_wake_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cxr_wake_init(struct cxr_wake *w)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    w->seq = 0;
}

void cxr_wake_destroy(struct cxr_wake *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

void cxr_wake_signal(struct cxr_wake *w)
{
    pthread_mutex_lock(&w->mu);
    w->seq++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

uint64_t cxr_wake_seq(struct cxr_wake *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t s = w->seq;
    pthread_mutex_unlock(&w->mu);
    return s;
}

void cxr_wake_wait(struct cxr_wake *w, uint64_t seen, int64_t deadline_ms, const atomic_bool *stop)
{
    int64_t left = deadline_ms - cxr_wake_now_ms();
    if (left > MAX_WAIT_MS)
        left = MAX_WAIT_MS;
    if (left < 0)
        left = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += left / 1000;
    ts.tv_nsec += (left % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (w->seq == seen && !(stop && atomic_load(stop)))
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&w->mu);
}
