/* cmd_score.c — `cxr-triage score`: score DICOM files, print one line (or one
 * JSON object) per input, write one SR per analysed image. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "cxr/dicom.h"
#include "cxr/log.h"
#include "cxr/mem.h"
#include "cxr/triage.h"

#define MAX_INPUTS 1000000

static void score_usage(FILE *fp)
{
    fprintf(fp, "usage: cxr-triage score [options] FILE|DIR...\n"
                "  --config FILE      configuration (default: see docs/configuration.md)\n"
                "  --model FILE       model file (default: the configuration's model/path)\n"
                "  --sr-out DIR       write one SR per analysed image into DIR\n"
                "  --json             one JSON object per input instead of a text line\n"
                "  --backend auto|cpu|cuda   --precision auto|fp32|bf16|fp16\n"
                "  --threads N        --batch N\n"
                "Folders are searched recursively. Exit status: 0 all analysed, 1 some not\n"
                "analysed, 2 usage or fatal error.\n");
}

/* A growable list of input paths (capped at MAX_INPUTS). */
struct path_list {
    char **v;
    size_t n, cap;
};

static bool list_push(struct path_list *l, const char *p)
{
    if (!cxr_grow((void **)&l->v, &l->cap, l->n, sizeof *l->v, MAX_INPUTS))
        return false;
    l->v[l->n] = strdup(p);
    return l->v[l->n++] != NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds `path`, or every regular file under it (sorted), to the list. */
static bool collect(struct path_list *l, const char *path, int depth)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return list_push(l, path);
    if (depth > 32)
        return true;
    DIR *d = opendir(path);
    if (!d)
        return list_push(l, path);
    struct path_list sub = {0};
    struct dirent *de;
    bool ok = true;
    while (ok && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char child[4096];
        snprintf(child, sizeof child, "%s/%s", path, de->d_name);
        ok = list_push(&sub, child);
    }
    closedir(d);
    qsort(sub.v, sub.n, sizeof *sub.v, cmp_str);
    for (size_t i = 0; i < sub.n; i++) {
        if (ok)
            ok = collect(l, sub.v[i], depth + 1);
        free(sub.v[i]);
    }
    free(sub.v);
    return ok;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void print_text(const struct cxr_conf *conf, const char *file,
                       const struct cxr_triage_result *r, const char *sr_path)
{
    if (!r->analysed) {
        printf("%s\t%s\tnot analysed: %s\n", file,
               r->info.sop_instance_uid[0] ? r->info.sop_instance_uid : "-", r->reason);
        return;
    }
    printf("%s\t%s\tp=%.4f\t%s\t%s\t[read %.1f gate %.2f present %.1f preprocess %.1f infer %.1f "
           "sr %.1f ms]%s%s%s%s\n",
           file, r->info.sop_instance_uid, r->probability,
           r->finding_present ? "present" : "absent", cxr_triage_priority_name(conf, r->priority),
           r->t.read_ms, r->t.gate_ms, r->t.present_ms, r->t.preprocess_ms, r->t.infer_ms,
           r->t.sr_ms, r->warning[0] ? "\twarning: " : "", r->warning,
           sr_path && *sr_path ? "\tsr: " : "", sr_path ? sr_path : "");
}

/* A JSON number, or JSON null for NaN and the infinities (json-c would print
 * them as NaN/Infinity, which is not JSON). */
static json_object *json_num(double v) { return isfinite(v) ? json_object_new_double(v) : NULL; }

static void print_json(const struct cxr_conf *conf, const char *file,
                       const struct cxr_triage_result *r, const char *sr_path)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "file", json_object_new_string(file));
    json_object_object_add(o, "sop_instance_uid", json_object_new_string(r->info.sop_instance_uid));
    json_object_object_add(o, "study_instance_uid",
                           json_object_new_string(r->info.study_instance_uid));
    json_object_object_add(o, "series_instance_uid",
                           json_object_new_string(r->info.series_instance_uid));
    json_object_object_add(o, "sop_class_uid", json_object_new_string(r->info.sop_class_uid));
    json_object_object_add(o, "modality", json_object_new_string(r->info.modality));
    json_object_object_add(o, "analysed", json_object_new_boolean(r->analysed));
    if (r->analysed) {
        json_object_object_add(o, "probability", json_num(r->probability));
        json_object_object_add(o, "finding",
                               json_object_new_string(r->finding_present ? "present" : "absent"));
        json_object_object_add(o, "priority",
                               json_object_new_string(cxr_triage_priority_name(conf, r->priority)));
        if (r->warning[0])
            json_object_object_add(o, "warning", json_object_new_string(r->warning));
        if (sr_path && *sr_path)
            json_object_object_add(o, "sr", json_object_new_string(sr_path));
    } else {
        json_object_object_add(o, "priority",
                               json_object_new_string(cxr_triage_priority_name(conf, r->priority)));
        json_object_object_add(o, "status", json_object_new_string(cxr_status_name(r->status)));
        json_object_object_add(o, "reason", json_object_new_string(r->reason));
    }
    json_object *t = json_object_new_object();
    json_object_object_add(t, "read", json_num(r->t.read_ms));
    json_object_object_add(t, "gate", json_num(r->t.gate_ms));
    json_object_object_add(t, "present", json_num(r->t.present_ms));
    json_object_object_add(t, "preprocess", json_num(r->t.preprocess_ms));
    json_object_object_add(t, "infer", json_num(r->t.infer_ms));
    json_object_object_add(t, "sr", json_num(r->t.sr_ms));
    json_object_object_add(o, "timing_ms", t);
    puts(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

static bool parse_backend(const char *s, int32_t *out)
{
    if (!strcmp(s, "auto"))
        *out = CXR_NN_BACKEND_AUTO;
    else if (!strcmp(s, "cpu"))
        *out = CXR_NN_BACKEND_CPU;
    else if (!strcmp(s, "cuda"))
        *out = CXR_NN_BACKEND_CUDA;
    else
        return false;
    return true;
}

static bool parse_precision(const char *s, int32_t *out)
{
    if (!strcmp(s, "auto"))
        *out = CXR_NN_PRECISION_AUTO;
    else if (!strcmp(s, "fp32"))
        *out = CXR_NN_PRECISION_FP32;
    else if (!strcmp(s, "bf16"))
        *out = CXR_NN_PRECISION_BF16;
    else if (!strcmp(s, "fp16"))
        *out = CXR_NN_PRECISION_FP16;
    else
        return false;
    return true;
}

int cmd_score(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'},  {"model", required_argument, 0, 'm'},
        {"sr-out", required_argument, 0, 'o'},  {"json", no_argument, 0, 'j'},
        {"backend", required_argument, 0, 'b'}, {"precision", required_argument, 0, 'p'},
        {"threads", required_argument, 0, 't'}, {"batch", required_argument, 0, 'n'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    const char *config_path = NULL, *sr_out = NULL;
    bool json = false;
    struct cxr_triage_engine_options eo;
    cxr_triage_engine_options_init(&eo);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 'm': eo.model_path = optarg; break;
        case 'o': sr_out = optarg; break;
        case 'j': json = true; break;
        case 'b':
            if (!parse_backend(optarg, &eo.backend)) {
                cli_error("score", "--backend expects auto, cpu or cuda, got '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            break;
        case 'p':
            if (!parse_precision(optarg, &eo.precision)) {
                cli_error("score", "--precision expects auto, fp32, bf16 or fp16, got '%s'",
                          optarg);
                return CLI_EXIT_FATAL;
            }
            break;
        case 't':
            eo.threads = atoi(optarg);
            if (eo.threads < 0 || eo.threads > 1024) {
                cli_error("score", "--threads expects 0..1024, got '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            break;
        case 'n':
            eo.batch_size = atoi(optarg);
            if (eo.batch_size < 1 || eo.batch_size > 256) {
                cli_error("score", "--batch expects 1..256, got '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            break;
        case 'h': score_usage(stdout); return CLI_EXIT_OK;
        default: score_usage(stderr); return CLI_EXIT_FATAL;
        }
    }
    if (optind >= argc) {
        score_usage(stderr);
        return CLI_EXIT_FATAL;
    }

    int rc = CLI_EXIT_FATAL;
    struct path_list inputs = {0};
    struct cxr_triage_engine *engine = NULL;
    struct cxr_dicom_instance **insts = NULL;
    struct cxr_triage_result *results = NULL;
    struct cxr_conf *conf = cli_load_conf(config_path);
    if (!conf)
        return CLI_EXIT_FATAL;
    if (!sr_out && conf->sr.output_dir && *conf->sr.output_dir)
        sr_out = conf->sr.output_dir;
    if (sr_out && mkdir(sr_out, 0755) != 0 && errno != EEXIST) {
        cli_error("score", "cannot create --sr-out folder %s: %s", sr_out, strerror(errno));
        goto out;
    }
    for (int i = optind; i < argc; i++) {
        if (!collect(&inputs, argv[i], 0)) {
            cli_error("score", "too many inputs or out of memory (limit %d files)", MAX_INPUTS);
            goto out;
        }
    }

    cxr_dicom_global_init();
    char err[CXR_ERRLEN] = "", note[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_triage_engine_new(conf, &eo, &engine, note, err);
    if (st != CXR_OK) {
        cli_error("score", "%s", err[0] ? err : cxr_status_str(st));
        goto out;
    }
    if (note[0])
        cxr_log(CXR_LOG_INFO, "score", "%s", note);
    cxr_log(CXR_LOG_INFO, "score", "%s", cxr_triage_engine_describe(engine));
    const struct cxr_nn_model_meta *meta = cxr_triage_engine_model_meta(engine);
    if (cxr_nn_model_meta_untrained(meta))
        cxr_log(CXR_LOG_WARN, "score",
                "the model is UNTRAINED (random weights): scores are meaningless");

    int32_t bs = cxr_triage_engine_batch_size(engine);
    insts = calloc((size_t)bs, sizeof *insts);
    results = calloc((size_t)bs, sizeof *results);
    if (!insts || !results)
        goto out;
    size_t analysed = 0, skipped = 0;
    for (size_t base = 0; base < inputs.n; base += (size_t)bs) {
        int32_t nb = inputs.n - base < (size_t)bs ? (int32_t)(inputs.n - base) : bs;
        memset(results, 0, sizeof *results * (size_t)nb);
        for (int32_t i = 0; i < nb; i++) {
            char derr[CXR_ERRLEN] = "";
            double t0 = now_ms();
            st = cxr_dicom_instance_load_file_within(inputs.v[base + i], &conf->gate, &insts[i],
                                                     derr);
            results[i].t.read_ms = now_ms() - t0;
            if (st != CXR_OK)
                cxr_triage_result_not_analysed(&results[i], st, derr);
        }
        cxr_triage_engine_score(engine, insts, nb, results);
        for (int32_t i = 0; i < nb; i++) {
            struct cxr_triage_result *r = &results[i];
            char sr_path[4096] = "";
            if (r->analysed && sr_out) {
                char serr[CXR_ERRLEN] = "";
                snprintf(sr_path, sizeof sr_path, "%s/SR_%s.dcm", sr_out, r->info.sop_instance_uid);
                double t0 = now_ms();
                st = cxr_triage_engine_write_sr(engine, r, 1, NULL, NULL, sr_path, NULL, NULL, NULL,
                                                serr);
                r->t.sr_ms = now_ms() - t0;
                if (st != CXR_OK) {
                    cxr_log(CXR_LOG_ERROR, "score", "%s: SR not written: %s", inputs.v[base + i],
                            serr);
                    sr_path[0] = '\0';
                    r->analysed = false;
                    r->status = st;
                    snprintf(r->reason, sizeof r->reason, "SR could not be written: %.*s",
                             (int)sizeof r->reason - 32, serr);
                }
            }
            if (r->analysed)
                analysed++;
            else
                skipped++;
            if (json)
                print_json(conf, inputs.v[base + i], r, sr_path);
            else
                print_text(conf, inputs.v[base + i], r, sr_path);
            cxr_dicom_instance_free(insts[i]);
            insts[i] = NULL;
        }
        fflush(stdout);
    }
    cxr_log(CXR_LOG_INFO, "score", "%zu analysed, %zu not analysed", analysed, skipped);
    rc = skipped ? CLI_EXIT_PARTIAL : CLI_EXIT_OK;

out:
    free(insts);
    free(results);
    cxr_triage_engine_free(engine);
    for (size_t i = 0; i < inputs.n; i++)
        free(inputs.v[i]);
    free(inputs.v);
    cxr_conf_free(conf);
    return rc;
}
