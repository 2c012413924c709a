/* outbox.c — retry delays of what the doors send out (see cxr/outbox.h). */
#include "cxr/outbox.h"

int64_t cxr_triage_backoff_ms(int32_t attempt, int64_t base_ms, int64_t cap_ms, double u01)
{
    if (base_ms <= 0)
        return 0;
    if (cap_ms < base_ms)
        cap_ms = base_ms;
    if (attempt < 1)
        attempt = 1;
    int64_t d = base_ms;
    for (int32_t i = 1; i < attempt && d < cap_ms; i++)
        d = d > cap_ms / 2 ? cap_ms : d * 2;
    if (d > cap_ms)
        d = cap_ms;
    if (!(u01 >= 0.0))
        u01 = 0.0;
    if (u01 >= 1.0)
        u01 = 0.999999;
    /* "Equal jitter": half fixed, half random, so retries from many studies
     * spread out but never come sooner than half the nominal delay. */
    return d / 2 + (int64_t)((double)(d - d / 2) * u01);
}

bool cxr_triage_retry_next(const struct cxr_triage_retry *policy, int32_t attempts, int64_t now_ms,
                           double u01, int64_t *next_ms)
{
    if (policy->max_attempts > 0 && attempts >= policy->max_attempts) {
        *next_ms = 0;
        return false;
    }
    *next_ms = now_ms + cxr_triage_backoff_ms(attempts, policy->base_ms, policy->cap_ms, u01);
    return true;
}
