/* backend.c — opening, choosing and closing compute backends (see backend.h). */
#include "backend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The backends this build has. A CUDA backend adds a row here (under its
 * build option); nothing else in nn knows which backends exist. */
struct backend_entry {
    enum cxr_nn_backend_kind kind;
    enum cxr_status (*open)(const struct cxr_nn_backend_options *opt, struct cxr_nn_backend **out,
                            char *err);
    void (*version)(char *buf, size_t len);
};

#ifdef CXR_HAVE_CUDA /* set by nn/CMakeLists.txt when the CUDA backend is built */
enum cxr_status cxr_nn_backend_cuda_open(const struct cxr_nn_backend_options *opt,
                                         struct cxr_nn_backend **out, char *err);
void cxr_nn_backend_cuda_version(char *buf, size_t len);
#endif

static const struct backend_entry backends[] = {
    {CXR_NN_BACKEND_CPU, cxr_nn_backend_cpu_open, cxr_nn_backend_cpu_version},
#ifdef CXR_HAVE_CUDA
    {CXR_NN_BACKEND_CUDA, cxr_nn_backend_cuda_open, cxr_nn_backend_cuda_version},
#endif
};
#define N_BACKENDS (sizeof backends / sizeof backends[0])

static const struct backend_entry *find_backend(enum cxr_nn_backend_kind kind)
{
    for (size_t i = 0; i < N_BACKENDS; i++)
        if (backends[i].kind == kind)
            return &backends[i];
    return NULL;
}

static void set_note(char *note, const char *fmt, const char *arg)
{
    if (note)
        snprintf(note, CXR_ERRLEN, fmt, arg);
}

enum cxr_status cxr_nn_backend_open(const struct cxr_nn_backend_options *opt,
                                    struct cxr_nn_backend **out, char *note, char *err)
{
    if (note)
        note[0] = '\0';
    if (!out)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "backend: no output pointer");
    *out = NULL;
    struct cxr_nn_backend_options o = {.kind = CXR_NN_BACKEND_AUTO,
                                       .precision = CXR_NN_PRECISION_AUTO};
    if (opt)
        o = *opt;
    if (o.threads < 0 || o.threads > 1024 || o.device < 0)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "backend: threads %d (0..1024) or device %d (>= 0) out of range",
                          (int)o.threads, (int)o.device);
    switch (o.kind) {
    case CXR_NN_BACKEND_CPU: return cxr_nn_backend_cpu_open(&o, out, err);
    case CXR_NN_BACKEND_CUDA: {
        const struct backend_entry *e = find_backend(CXR_NN_BACKEND_CUDA);
        if (!e)
            return cxr_seterr(err, CXR_ERR_NN_NO_DEVICE,
                              "backend: CUDA asked for, but this build has no CUDA backend "
                              "(built with: %s); use backend auto or cpu",
                              cxr_nn_backends_built());
        return e->open(&o, out, err);
    }
    case CXR_NN_BACKEND_AUTO: {
        const struct backend_entry *e = find_backend(CXR_NN_BACKEND_CUDA);
        if (!e) {
            set_note(note, "%s", "cpu: no CUDA backend in this build");
        } else {
            char why[CXR_ERRLEN];
            o.kind = CXR_NN_BACKEND_CUDA;
            if (e->open(&o, out, why) == CXR_OK) {
                set_note(note, "cuda: %s", (*out)->description);
                return CXR_OK;
            }
            set_note(note, "cpu: CUDA not usable (%.960s)", why);
        }
        o.kind = CXR_NN_BACKEND_CPU;
        return cxr_nn_backend_cpu_open(&o, out, err);
    }
    }
    return cxr_seterr(err, CXR_ERR_INVALID_ARG, "backend: unknown kind %d", (int)o.kind);
}

void cxr_nn_backend_close(struct cxr_nn_backend *b)
{
    if (!b)
        return;
    if (b->iface && b->iface->free)
        b->iface->free(b);
    free(b);
}

const char *cxr_nn_backend_name(const struct cxr_nn_backend *b)
{
    return b ? b->iface->get_name(b) : "none";
}

const char *cxr_nn_backend_describe(const struct cxr_nn_backend *b)
{
    return b ? b->description : "";
}

enum cxr_nn_precision cxr_nn_backend_precision(const struct cxr_nn_backend *b)
{
    return b ? b->precision : CXR_NN_PRECISION_FP32;
}

enum cxr_status cxr_nn_backend_preprocess_u8(struct cxr_nn_backend *b,
                                             const struct cxr_nn_model_meta *meta,
                                             const uint8_t *pixels, int32_t width, int32_t height,
                                             int32_t stride, const uint8_t *mask, float *out,
                                             char *err)
{
    /* a backend's own preprocessing (the GPU kernel) covers contrast none only */
    if (b && b->iface && b->iface->preprocess_u8 && meta && meta->contrast == CXR_NN_CONTRAST_NONE)
        return b->iface->preprocess_u8(b, meta, pixels, width, height, stride, mask, out, err);
    enum cxr_status st = cxr_nn_preprocess_u8(meta, pixels, width, height, stride, mask, out);
    if (st != CXR_OK)
        cxr_seterr(err, st, "preprocess: %s", cxr_status_str(st));
    return st;
}

static char built[256];
static pthread_once_t built_once = PTHREAD_ONCE_INIT;

static void make_built(void)
{
    size_t n = 0;
    for (size_t i = 0; i < N_BACKENDS && n + 1 < sizeof built; i++) {
        char v[96];
        backends[i].version(v, sizeof v);
        int k = snprintf(built + n, sizeof built - n, "%s%s(%s)", n ? " " : "",
                         backends[i].kind == CXR_NN_BACKEND_CPU ? "cpu" : "cuda", v);
        if (k < 0)
            break;
        n += (size_t)k;
    }
}

const char *cxr_nn_backends_built(void)
{
    pthread_once(&built_once, make_built);
    return built;
}
