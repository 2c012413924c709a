/* cxr/outbox.h — how both doors retry what they send out (the node's SR
 * deliveries, the plugin's forwards): exponential backoff with jitter. */
#ifndef CXR_OUTBOX_H
#define CXR_OUTBOX_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exponential backoff with jitter: the delay before attempt `attempt`+1
 * after `attempt` failures (>= 1): d = min(cap, base * 2^(attempt-1)), then a
 * uniformly jittered value in [d/2, d] picked by u01 in [0,1). Never
 * overflows; base <= 0 gives 0. Any thread. */
int64_t cxr_triage_backoff_ms(int32_t attempt, int64_t base_ms, int64_t cap_ms, double u01);

/* A retry policy: the first delay, the longest delay, and the attempts
 * after which an item is given up (dead-lettered; 0 = never). */
struct cxr_triage_retry {
    int64_t base_ms;
    int64_t cap_ms;
    int32_t max_attempts;
};

/* The outbox's one decision after `attempts` failed attempts (>= 1): false
 * when the item is given up (attempts reached max_attempts), else true with
 * *next_ms = now_ms + the backoff delay (jitter from u01 in [0,1)). The
 * node's SR deliveries, the plugin's forwards and its study retries all ask
 * this. Any thread. */
bool cxr_triage_retry_next(const struct cxr_triage_retry *policy, int32_t attempts, int64_t now_ms,
                           double u01, int64_t *next_ms);

#ifdef __cplusplus
}
#endif

#endif
