/* cxr/outbox.h — how both doors retry what they send out (the node's SR
 * deliveries, the plugin's forwards): exponential backoff with jitter. */
#ifndef CXR_OUTBOX_H
#define CXR_OUTBOX_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exponential backoff with jitter: the delay before attempt `attempt`+1
 * after `attempt` failures (>= 1): d = min(cap, base * 2^(attempt-1)), then a
 * uniformly jittered value in [d/2, d] picked by u01 in [0,1). Never
 * overflows; base <= 0 gives 0. Any thread. */
int64_t cxr_triage_backoff_ms(int32_t attempt, int64_t base_ms, int64_t cap_ms, double u01);

#ifdef __cplusplus
}
#endif

#endif
