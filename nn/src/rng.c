/* rng.c — the seeded generator training uses (shuffles, augmentation,
 * bootstrap): xoshiro256** 1.0 seeded through splitmix64, as published by
 * Blackman and Vigna (https://prng.di.unimi.it/). Identical sequences on
 * every platform, so a seed reproduces a run. */
#include <math.h>

#include "cxr/nn_train.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void cxr_nn_rng_seed(struct cxr_nn_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    /* splitmix64 never yields four zero words in a row, so the state is valid */
}

uint64_t cxr_nn_rng_next(struct cxr_nn_rng *r)
{
    uint64_t *s = r->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double cxr_nn_rng_uniform(struct cxr_nn_rng *r)
{
    return (double)(cxr_nn_rng_next(r) >> 11) * 0x1.0p-53;
}

/* Lemire's multiply-and-reject method: unbiased for every n. */
uint64_t cxr_nn_rng_below(struct cxr_nn_rng *r, uint64_t n)
{
    if (n == 0)
        return 0;
    unsigned __int128 m = (unsigned __int128)cxr_nn_rng_next(r) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = -n % n;
        while (low < threshold) {
            m = (unsigned __int128)cxr_nn_rng_next(r) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

double cxr_nn_rng_normal(struct cxr_nn_rng *r)
{
    double u1 = 1.0 - cxr_nn_rng_uniform(r); /* (0, 1]: log is finite */
    double u2 = cxr_nn_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void cxr_nn_rng_shuffle(struct cxr_nn_rng *r, int32_t *idx, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)cxr_nn_rng_below(r, i);
        int32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

uint64_t cxr_nn_seed_mix(uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t x = seed;
    uint64_t h = splitmix64(&x);
    x = h ^ a;
    h = splitmix64(&x);
    x = h ^ b;
    return splitmix64(&x);
}
