/* cmd_evaluate.c — `cxr-triage evaluate`: any model on any labeled set,
 * through exactly the inference preprocessing and the model's own
 * thresholds (cxr_train_evaluate_run, train/include/cxr/train.h). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cxr/nn.h"
#include "cxr/train.h"

static void evaluate_usage(FILE *fp)
{
    fprintf(
        fp,
        "usage: cxr-triage evaluate --model FILE --data PATH [--report FILE.html] [--json]\n"
        "                           [--config FILE]\n"
        "                           [--label-map \"a=NORMAL b=PNEUMONIA\"] [--allow-outside]\n"
        "                           [--threads N]\n"
        "                           [--precision fp32|bf16] [--batch N] [--resamples N] [--seed N]\n"
        "                           [--calibrate-out FILE [--target-sensitivity X]\n"
        "                            [--urgent-specificity X]]\n"
        "  Scores every usable image of PATH (folder, archive or CSV manifest, as for train)\n"
        "  and prints AUC, sensitivity, specificity, accuracy, PPV and NPV at the model's\n"
        "  operating and urgent thresholds with bootstrap 95 %% intervals, and how well the\n"
        "  probabilities are calibrated (10 bins, expected calibration error) (--json: one\n"
        "  JSON object on stdout). --calibrate-out writes a copy of the model whose\n"
        "  thresholds are chosen on these images as train chooses them on validation data\n"
        "  (a site's own labeled films; same weights). DICOM entries pass the gate of the\n"
        "  configuration (--config FILE, else the one the node uses): the figures describe\n"
        "  the images the node analyses, the others are listed as skipped. Images the model\n"
        "  was trained on (the list in its metadata) are counted and warned about: the\n"
        "  metrics are then optimistic. Exit status: 0 done, 1 done but entries were\n"
        "  skipped, 2 error.\n");
}

static void print_ci(const char *name, const struct cxr_nn_ci *c)
{
    printf("  %-12s %.4f  [%.4f, %.4f]\n", name, c->value, c->lo, c->hi);
}

int cmd_evaluate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"data", required_argument, 0, 'd'},
        {"report", required_argument, 0, 'r'},
        {"json", no_argument, 0, 'j'},
        {"label-map", required_argument, 0, 'l'},
        {"allow-outside", no_argument, 0, 'A'},
        {"threads", required_argument, 0, 't'},
        {"precision", required_argument, 0, 'p'},
        {"batch", required_argument, 0, 'b'},
        {"resamples", required_argument, 0, 'n'},
        {"seed", required_argument, 0, 's'},
        {"calibrate-out", required_argument, 0, 'c'},
        {"target-sensitivity", required_argument, 0, 'T'},
        {"urgent-specificity", required_argument, 0, 'U'},
        {"config", required_argument, 0, 'C'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct cxr_train_evaluate_options o;
    cxr_train_evaluate_options_init(&o);
    bool json = false;
    const char *config_path = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        long v;
        switch (c) {
        case 'm': o.model = optarg; break;
        case 'd': o.data = optarg; break;
        case 'r': o.report = optarg; break;
        case 'j': json = true; break;
        case 'l': o.label_map = optarg; break;
        case 'A': o.allow_outside = true; break;
        case 't':
        case 'b':
        case 'n':
            v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 0 || v > 1000000 || (c == 'n' && v != 0 && v < 100) ||
                (c == 'b' && v < 1)) {
                cli_error("evaluate", "bad number '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            if (c == 't')
                o.threads = (int32_t)v;
            else if (c == 'b')
                o.batch = (int32_t)v;
            else
                o.resamples = (int32_t)v;
            break;
        case 's':
            o.seed = strtoull(optarg, &end, 10);
            if (!*optarg || *end) {
                cli_error("evaluate", "--seed expects a non-negative integer");
                return CLI_EXIT_FATAL;
            }
            break;
        case 'p':
            if (!strcmp(optarg, "fp32"))
                o.precision = CXR_NN_PRECISION_FP32;
            else if (!strcmp(optarg, "bf16"))
                o.precision = CXR_NN_PRECISION_BF16;
            else {
                cli_error("evaluate", "--precision expects fp32 or bf16");
                return CLI_EXIT_FATAL;
            }
            break;
        case 'c': o.calibrate_out = optarg; break;
        case 'T':
        case 'U': {
            double x = strtod(optarg, &end);
            if (!*optarg || *end || !(x > 0.0 && x <= 1.0)) {
                cli_error("evaluate", "--%s expects a number in (0, 1], got '%s'",
                          c == 'T' ? "target-sensitivity" : "urgent-specificity", optarg);
                return CLI_EXIT_FATAL;
            }
            if (c == 'T')
                o.target_sensitivity = x;
            else
                o.urgent_specificity = x;
            break;
        }
        case 'C': config_path = optarg; break;
        case 'h': evaluate_usage(stdout); return CLI_EXIT_OK;
        default: evaluate_usage(stderr); return CLI_EXIT_FATAL;
        }
    }
    if (optind != argc || !o.model || !o.data) {
        cli_error("evaluate", "--model and --data are required");
        evaluate_usage(stderr);
        return CLI_EXIT_FATAL;
    }
    char cmdline[4096];
    size_t u = (size_t)snprintf(cmdline, sizeof cmdline, "cxr-triage");
    for (int i = 0; i < argc && u < sizeof cmdline; i++)
        u += (size_t)snprintf(cmdline + u, sizeof cmdline - u, " %s", argv[i]);
    o.command_line = cmdline;
    o.log = stderr;
    /* The node's gate, so that what is measured is what the node analyses. */
    struct cxr_conf *conf = cli_load_conf(config_path);
    if (!conf)
        return CLI_EXIT_FATAL;
    o.gate = &conf->gate;
    fprintf(stderr, "evaluate: DICOM entries pass the gate of %s\n",
            conf->source_path && *conf->source_path ? conf->source_path
                                                    : "the built-in default configuration");
    struct cxr_train_evaluate_result r;
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_train_evaluate_run(&o, &r, err);
    cxr_conf_free(conf);
    if (st != CXR_OK) {
        cli_error("evaluate", "%s", err[0] ? err : cxr_status_str(st));
        return CLI_EXIT_FATAL;
    }
    if (json) {
        char *text = cxr_train_evaluate_to_json(&r, NULL);
        if (!text) {
            cli_error("evaluate", "out of memory");
            return CLI_EXIT_FATAL;
        }
        printf("%s\n", text);
        free(text);
    } else {
        const struct cxr_nn_eval *e = &r.operating, *g = &r.urgent;
        printf("%s on %s: %zu images (%lld positive, %lld negative), %zu skipped\n", o.model,
               o.data, r.count, (long long)e->positives, (long long)e->negatives, r.skipped);
        if (!r.training_list)
            printf("training images: the model lists none; overlap not checked\n");
        else if (!isfinite(r.training_overlap_fraction))
            printf("training images: cannot be told (none of these in the model's sample)\n");
        else if (r.training_overlap > 0)
            printf("WARNING: %s%lld of these %zu images (%.1f %%) were used to train the model: "
                   "the metrics below are optimistic\n",
                   r.training_overlap_estimated ? "about " : "", (long long)r.training_overlap,
                   r.count, 100.0 * r.training_overlap_fraction);
        else
            printf("training images: none of these (checked against the model's list)\n");
        printf("  %-12s %.4f  [%.4f, %.4f]   (bootstrap 95 %% CI, %d resamples)\n", "AUC",
               e->auc.value, e->auc.lo, e->auc.hi, (int)e->resamples);
        printf("operating threshold %.4f: TP %lld FP %lld TN %lld FN %lld\n", e->threshold,
               (long long)e->cm.tp, (long long)e->cm.fp, (long long)e->cm.tn, (long long)e->cm.fn);
        print_ci("sensitivity", &e->sensitivity);
        print_ci("specificity", &e->specificity);
        print_ci("accuracy", &e->accuracy);
        print_ci("PPV", &e->ppv);
        print_ci("NPV", &e->npv);
        printf("urgent threshold %.4f: sensitivity %.4f, specificity %.4f\n", g->threshold,
               g->sensitivity.value, g->specificity.value);
        printf("calibration: expected calibration error %.4f (10 bins of p)\n", r.reliability.ece);
        if (r.recalibrated)
            printf("recalibrated: operating %.4f, urgent %.4f (sensitivity %.4f, specificity "
                   "%.4f on these images; optimistic, they chose it) -> %s\n",
                   r.recalibration.operating_threshold, r.recalibration.urgent_threshold,
                   r.recalibration.operating.sensitivity.value,
                   r.recalibration.operating.specificity.value, o.calibrate_out);
        printf("mean cross-entropy %.4f; data %s\n", r.loss, r.digest);
    }
    return r.skipped ? CLI_EXIT_PARTIAL : CLI_EXIT_OK;
}
