/* backend_cpu.c — the CPU backend on oneDNN 2.6 (v2 C API): the backend
 * object, ISA/precision/thread choice, parameter storage and the weight
 * layout cache. Graph planning and execution live in backend_cpu_plan.c.
 *
 * Threads: Debian's libdnnl is built with the OpenMP runtime (libgomp);
 * oneDNN sizes its parallel regions with omp_get_max_threads() of the
 * calling thread, both when a primitive is created and when it runs, so the
 * backend sets that thread's OpenMP thread count before planning and before
 * every compute. The function is looked up at run time (libgomp is already
 * loaded as libdnnl's dependency), so nn needs no OpenMP link flags.
 */
#include "backend_cpu.h"

#include <dlfcn.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cxr/log.h"

enum cxr_status cxr_nn_cpu_fail(char *err, dnnl_status_t s, const char *where, const char *call)
{
    size_t fn = strcspn(call, "(");
    return cxr_seterr(err, CXR_ERR_NN_BACKEND, "oneDNN: %s: %.*s: %s", where, (int)fn, call,
                      dnnl_status2str(s));
}

static const char *runtime_name(unsigned rt)
{
    switch (rt) {
    case DNNL_RUNTIME_SEQ: return "sequential";
    case DNNL_RUNTIME_OMP: return "OpenMP";
    case DNNL_RUNTIME_TBB: return "TBB";
    case DNNL_RUNTIME_THREADPOOL: return "threadpool";
    default: return "unknown runtime";
    }
}

void cxr_nn_backend_cpu_version(char *buf, size_t len)
{
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, len, "oneDNN %d.%d.%d (%s)", v->major, v->minor, v->patch,
             runtime_name(v->cpu_runtime));
}

static const char *isa_name(dnnl_cpu_isa_t isa)
{
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "isa?";
    }
}

/* True when the ISA has bf16 dot products in hardware (AVX512-BF16 or AMX);
 * oneDNN's ISA values are supersets by bits. */
static bool isa_has_bf16(dnnl_cpu_isa_t isa)
{
    return ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
           (unsigned)dnnl_cpu_isa_avx512_core_bf16;
}

static bool isa_has_amx(dnnl_cpu_isa_t isa)
{
    return ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_amx) ==
           (unsigned)dnnl_cpu_isa_avx512_core_amx;
}

/* CPUs this process may run on (taskset/cgroup aware). */
static int32_t usable_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int32_t)n : 1;
}

void cxr_nn_cpu_apply_threads(const struct cpu_ctx *c)
{
    if (c->omp_set_num_threads)
        c->omp_set_num_threads(c->threads);
}

static const char *cpu_get_name(const struct cxr_nn_backend *b) { return "cpu"; }

static void cpu_free(struct cxr_nn_backend *b)
{
    struct cpu_ctx *c = b->context;
    if (!c)
        return;
    if (c->engine)
        dnnl_engine_destroy(c->engine);
    free(c);
    b->context = NULL;
}

static void cpu_buffer_free(struct cxr_nn_backend *b, struct cxr_nn_tensor *t)
{
    struct cpu_tensor *ct = t ? t->extra : NULL;
    if (!ct)
        return;
    for (int32_t i = 0; i < ct->n_cache; i++)
        dnnl_memory_destroy(ct->cache[i].mem);
    free(ct->cache);
    free(ct->data);
    free(ct);
    t->extra = NULL;
}

static enum cxr_status cpu_buffer_alloc(struct cxr_nn_backend *b, struct cxr_nn_tensor *t,
                                        char *err)
{
    if (!t || t->extra || t->dtype != CXR_NN_DTYPE_F32 || t->nbytes == 0 ||
        t->nbytes > ((size_t)1 << 34))
        return cxr_seterr(err, CXR_ERR_INVALID_ARG,
                          "cpu: cannot hold tensor '%s' (F32, 1 byte .. 16 GiB, once)",
                          t ? t->name : "(null)");
    struct cpu_tensor *ct = calloc(1, sizeof *ct);
    size_t cap = (t->nbytes + 63) & ~(size_t)63;
    if (ct)
        ct->data = aligned_alloc(64, cap);
    if (!ct || !ct->data) {
        free(ct);
        return cxr_seterr(err, CXR_ERR_NOMEM, "cpu: out of memory for tensor '%s'", t->name);
    }
    memset(ct->data, 0, cap);
    ct->nbytes = t->nbytes;
    t->extra = ct;
    return CXR_OK;
}

/* Reorders the plain data into `dst` (layout/type conversion) on `stream`. */
static enum cxr_status convert(struct cpu_ctx *c, struct cpu_tensor *ct, const char *name,
                               const dnnl_memory_desc_t *plain, dnnl_memory_t dst,
                               dnnl_stream_t stream, char *err)
{
    enum cxr_status st = CXR_OK;
    dnnl_memory_t src = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    const dnnl_memory_desc_t *want = NULL;
    CXR_DNNL(dnnl_memory_get_memory_desc(dst, &want), name);
    CXR_DNNL(dnnl_memory_create(&src, plain, c->engine, ct->data), name);
    CXR_DNNL(dnnl_reorder_primitive_desc_create(&pd, plain, c->engine, want, c->engine, NULL),
             name);
    CXR_DNNL(dnnl_primitive_create(&prim, pd), name);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
    CXR_DNNL(dnnl_primitive_execute(prim, stream, 2, args), name);
    CXR_DNNL(dnnl_stream_wait(stream), name);
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (src)
        dnnl_memory_destroy(src);
    return st;
}

/* Copies new data in and refreshes the converted copies in place, so that
 * plans holding them see the new values (training updates weights). */
static enum cxr_status cpu_tensor_set(struct cxr_nn_backend *b, struct cxr_nn_tensor *t,
                                      const void *data, size_t offset, size_t size, char *err)
{
    struct cpu_ctx *c = b->context;
    struct cpu_tensor *ct = t ? t->extra : NULL;
    enum cxr_status st = CXR_OK;
    dnnl_stream_t stream = NULL;
    if (!ct || (!data && size) || offset > ct->nbytes || size > ct->nbytes - offset)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "cpu: tensor_set out of range");
    if (size && data != (const char *)ct->data + offset) /* the storage itself: refresh only */
        memcpy((char *)ct->data + offset, data, size);
    for (int32_t i = 0; i < ct->n_cache; i++) {
        if (ct->cache[i].alias)
            continue;
        if (!stream) {
            cxr_nn_cpu_apply_threads(c);
            CXR_DNNL(dnnl_stream_create(&stream, c->engine, dnnl_stream_default_flags), t->name);
        }
        if ((st = convert(c, ct, t->name, &ct->cache[i].plain, ct->cache[i].mem, stream, err)) !=
            CXR_OK)
            goto fail;
    }
fail:
    if (stream)
        dnnl_stream_destroy(stream);
    return st;
}

static enum cxr_status cpu_tensor_get(struct cxr_nn_backend *b, const struct cxr_nn_tensor *t,
                                      void *data, size_t offset, size_t size, char *err)
{
    const struct cpu_tensor *ct = t ? t->extra : NULL;
    if (!ct || (!data && size) || offset > ct->nbytes || size > ct->nbytes - offset)
        return cxr_seterr(err, CXR_ERR_INVALID_ARG, "cpu: tensor_get out of range");
    if (size)
        memcpy(data, (const char *)ct->data + offset, size);
    return CXR_OK;
}

enum cxr_status cxr_nn_cpu_weights(struct cpu_ctx *c, struct cxr_nn_tensor *t,
                                   const dnnl_memory_desc_t *plain, const dnnl_memory_desc_t *want,
                                   dnnl_stream_t stream, dnnl_memory_t *out, char *err)
{
    enum cxr_status st = CXR_OK;
    struct cpu_tensor *ct = t->extra;
    dnnl_memory_t dst = NULL;
    *out = NULL;
    if (!ct)
        return cxr_seterr(err, CXR_ERR_INTERNAL, "cpu: parameter '%s' has no storage", t->name);
    if (dnnl_memory_desc_get_size(plain) != ct->nbytes)
        return cxr_seterr(err, CXR_ERR_NN_SHAPE,
                          "cpu: parameter '%s' has %zu bytes, the "
                          "kernel expects %zu",
                          t->name, ct->nbytes, dnnl_memory_desc_get_size(plain));
    for (int32_t i = 0; i < ct->n_cache; i++)
        if (dnnl_memory_desc_equal(&ct->cache[i].md, want) &&
            dnnl_memory_desc_equal(&ct->cache[i].plain, plain)) {
            *out = ct->cache[i].mem;
            return CXR_OK;
        }
    if (ct->n_cache == ct->cap_cache) {
        int32_t ncap = ct->cap_cache ? ct->cap_cache * 2 : 2;
        struct cpu_wcache *nc = realloc(ct->cache, (size_t)ncap * sizeof *nc);
        if (!nc)
            return cxr_seterr(err, CXR_ERR_NOMEM, "cpu: out of memory");
        ct->cache = nc;
        ct->cap_cache = ncap;
    }
    bool alias = dnnl_memory_desc_equal(plain, want) != 0;
    if (alias) {
        CXR_DNNL(dnnl_memory_create(&dst, want, c->engine, ct->data), t->name);
    } else {
        CXR_DNNL(dnnl_memory_create(&dst, want, c->engine, DNNL_MEMORY_ALLOCATE), t->name);
        if ((st = convert(c, ct, t->name, plain, dst, stream, err)) != CXR_OK)
            goto fail;
    }
    ct->cache[ct->n_cache] =
        (struct cpu_wcache){.md = *want, .plain = *plain, .mem = dst, .alias = alias};
    ct->n_cache++;
    *out = dst;
    return CXR_OK;
fail:
    if (dst)
        dnnl_memory_destroy(dst);
    return st;
}

static enum cxr_status cpu_synchronize(struct cxr_nn_backend *b, char *err)
{
    return CXR_OK; /* compute waits for its stream before returning */
}

static const struct cxr_nn_backend_i cpu_iface = {
    .get_name = cpu_get_name,
    .free = cpu_free,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .tensor_set = cpu_tensor_set,
    .tensor_get = cpu_tensor_get,
    .graph_plan = cxr_nn_cpu_graph_plan,
    .plan_free = cxr_nn_cpu_plan_free,
    .graph_release = cxr_nn_cpu_graph_release,
    .graph_compute = cxr_nn_cpu_graph_compute,
    .synchronize = cpu_synchronize,
    .train_plan = cxr_nn_cpu_train_plan,
    .train_plan_free = cxr_nn_cpu_train_plan_free,
    .train_forward = cxr_nn_cpu_train_forward,
    .train_backward = cxr_nn_cpu_train_backward,
    .tensor_sumsq = cxr_nn_cpu_tensor_sumsq,
    .optim_step = cxr_nn_cpu_optim_step,
};

static const char *precision_name(enum cxr_nn_precision p)
{
    return p == CXR_NN_PRECISION_BF16 ? "bf16" : p == CXR_NN_PRECISION_FP16 ? "fp16" : "fp32";
}

enum cxr_status cxr_nn_backend_cpu_open(const struct cxr_nn_backend_options *opt,
                                        struct cxr_nn_backend **out, char *err)
{
    enum cxr_status st = CXR_OK;
    struct cxr_nn_backend *b = NULL;
    struct cpu_ctx *c = NULL;
    *out = NULL;
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    enum cxr_nn_precision prec = opt->precision;
    switch (prec) {
    case CXR_NN_PRECISION_AUTO:
        /* fp32 even where bf16 is fast: bf16 logits are within ~1 % of
         * fp32 (tests/unit/check_nn_cpu.c), but the same image would then
         * score differently on hosts with and without AVX512-BF16/AMX, and
         * the operating thresholds were calibrated in fp32. bf16 stays an
         * explicit choice (docs/benchmarks.md). */
        prec = CXR_NN_PRECISION_FP32;
        break;
    case CXR_NN_PRECISION_FP32: break;
    case CXR_NN_PRECISION_BF16:
        if (!isa_has_bf16(isa))
            return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                              "cpu: bf16 asked for, but this CPU (oneDNN ISA %s) has neither "
                              "AVX512-BF16 nor AMX; use precision fp32 or auto",
                              isa_name(isa));
        break;
    default:
        return cxr_seterr(err, CXR_ERR_UNSUPPORTED,
                          "cpu: precision %s is not supported on the CPU; use fp32, bf16 "
                          "or auto",
                          precision_name(prec));
    }
    b = calloc(1, sizeof *b);
    c = calloc(1, sizeof *c);
    if (!b || !c) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "cpu: out of memory");
        goto fail;
    }
    CXR_DNNL(dnnl_engine_create(&c->engine, dnnl_cpu, 0), "cpu engine");
    c->isa = isa;
    c->bf16 = prec == CXR_NN_PRECISION_BF16;
    c->threads = opt->threads > 0 ? opt->threads : usable_cpus();
    const dnnl_version_t *v = dnnl_version();
    if (v->cpu_runtime == DNNL_RUNTIME_OMP) {
        void *fn = dlsym(RTLD_DEFAULT, "omp_set_num_threads");
        if (fn)
            memcpy(&c->omp_set_num_threads, &fn, sizeof fn);
    }
    if (!c->omp_set_num_threads && v->cpu_runtime != DNNL_RUNTIME_SEQ)
        cxr_log(CXR_LOG_WARN, "nn",
                "cpu: cannot set the thread count of oneDNN's %s runtime; "
                "it picks its own",
                runtime_name(v->cpu_runtime));
    if (v->cpu_runtime == DNNL_RUNTIME_SEQ)
        c->threads = 1;
    b->iface = &cpu_iface;
    b->kind = CXR_NN_BACKEND_CPU;
    b->precision = prec;
    b->threads = c->threads;
    b->context = c;
    char ver[96];
    cxr_nn_backend_cpu_version(ver, sizeof ver);
    snprintf(b->description, sizeof b->description, "%s, %s%s, %d thread%s, %s", ver, isa_name(isa),
             isa_has_amx(isa) ? "" : (isa_has_bf16(isa) ? " (no AMX)" : ""), (int)c->threads,
             c->threads == 1 ? "" : "s", precision_name(prec));
    *out = b;
    return CXR_OK;
fail:
    if (c && c->engine)
        dnnl_engine_destroy(c->engine);
    free(c);
    free(b);
    return st;
}
