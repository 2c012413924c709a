/* cmd_train.c — `cxr-triage train`: argument parsing for cxr_train_run
 * (train/include/cxr/train.h); Ctrl-C asks the run to write a resumable
 * checkpoint (a second Ctrl-C ends the process at once). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cxr/nn.h"
#include "cxr/train.h"

static volatile sig_atomic_t stop_flag;

static void on_sigint(int sig)
{
    stop_flag = 1;
    signal(sig, SIG_DFL); /* a second Ctrl-C ends the process */
}

static void train_usage(FILE *fp)
{
    fprintf(
        fp,
        "usage: cxr-triage train --data PATH --out FILE [options]\n"
        "\n"
        "data\n"
        "  --data PATH              folder of class folders, tar/zip archive or CSV manifest\n"
        "  --val PATH               explicit validation set (default: 25 %% of --data, grouped\n"
        "                           by patient, stratified, from --seed)\n"
        "  --val-fraction X         validation share of --data (default 0.25)\n"
        "  --label-map \"a=NORMAL b=PNEUMONIA\"   extra folder/label names\n"
        "  --allow-outside          CSV manifest rows may name files outside its folder\n"
        "  --classes A,B            class names (default NORMAL,PNEUMONIA or --init's)\n"
        "model\n"
        "  --arch resnet18|resnet34|resnet50   (default resnet18)\n"
        "  --input HxW              input size (default 224x224, or --init's)\n"
        "  --contrast none|equalize contrast normalisation before the resize, at training\n"
        "                           and inference alike (default none, or --init's)\n"
        "  --init MODEL             start from this model's weights (transfer learning)\n"
        "  --freeze-backbone        train only the final fc layer (needs --init)\n"
        "  --out FILE               the model file to write (atomic replace); a weak model\n"
        "                           goes to FILE.weak instead (see --accept-weak)\n"
        "  --accept-weak            write a weak model (validation AUC's lower 95 %% bound\n"
        "                           <= 0.6: not clearly better than chance) to --out anyway\n"
        "  --storage f32|bf16|f16   parameter storage in the file (default f32)\n"
        "  --width N                channels of the first stage (default 64, as torchvision;\n"
        "                           smaller only for tests and quick experiments)\n"
        "  --name NAME --version V  model metadata (default cxr-custom, today's date)\n"
        "  --age-range MIN-MAX      intended population in years, checked by the gate\n"
        "                           (default: the range of the DICOM ages in the data)\n"
        "optimisation\n"
        "  --epochs N (10)  --batch N (32)  --lr X (3e-3, one-cycle peak)\n"
        "  --weight-decay X (1e-4)  --optimizer adamw|sgd (adamw)  --clip X (1.0, 0 = off)\n"
        "  --balanced-sampler       draw classes equally instead of weighting the loss\n"
        "  --no-augment             no rotation/zoom/shift/brightness/contrast jitter\n"
        "  --seed N (1)             split, order, augmentation and initial weights\n"
        "  --patience N (0 = off)   stop after N epochs without a better validation AUC\n"
        "  --direct-conv            direct convolutions only (no Winograd; slower)\n"
        "calibration\n"
        "  --target-sensitivity X (0.95)  --urgent-specificity X (0.95)  --resamples N (2000)\n"
        "machinery\n"
        "  --threads N (all)  --precision fp32|bf16 (fp32)\n"
        "  --no-prefetch            prepare each batch just before its step (default: on a\n"
        "                           second thread while the previous step trains)\n"
        "  --checkpoint-dir DIR     (default OUT.ckpt)  --resume   continue an interrupted run\n"
        "  --report FILE.html       self-contained report (curves, ROC, confusion, thumbnails)\n"
        "\n"
        "Exit status: 0 done, 1 done but some entries were skipped, or the model is weak and\n"
        "was left at FILE.weak, or interrupted (resume with --resume), 2 usage or fatal\n"
        "error. See docs/retraining.md.\n");
}

static bool parse_double(const char *s, double *out)
{
    char *end;
    *out = strtod(s, &end);
    return *s && !*end;
}

static bool parse_int(const char *s, int32_t *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < -2147483647L || v > 2147483647L)
        return false;
    *out = (int32_t)v;
    return true;
}

static void command_line(int argc, char **argv, char *buf, size_t len)
{
    size_t u = (size_t)snprintf(buf, len, "cxr-triage");
    for (int i = 0; i < argc && u < len; i++)
        u += (size_t)snprintf(buf + u, len - u, " %s", argv[i]);
}

enum {
    O_DATA = 256,
    O_VAL,
    O_VALFRAC,
    O_LABELMAP,
    O_CLASSES,
    O_ARCH,
    O_INPUT,
    O_CONTRAST,
    O_INIT,
    O_FREEZE,
    O_OUT,
    O_STORAGE,
    O_NAME,
    O_VERSION,
    O_AGE,
    O_EPOCHS,
    O_BATCH,
    O_LR,
    O_WD,
    O_OPT,
    O_CLIP,
    O_BAL,
    O_NOAUG,
    O_SEED,
    O_PATIENCE,
    O_DIRECT,
    O_TSENS,
    O_USPEC,
    O_RESAMPLES,
    O_THREADS,
    O_PREC,
    O_CKDIR,
    O_RESUME,
    O_REPORT,
    O_WIDTH,
    O_NOPREFETCH,
    O_ACCEPT_WEAK,
    O_ALLOW_OUTSIDE
};

int cmd_train(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, 0, O_DATA},
        {"val", required_argument, 0, O_VAL},
        {"val-fraction", required_argument, 0, O_VALFRAC},
        {"label-map", required_argument, 0, O_LABELMAP},
        {"allow-outside", no_argument, 0, O_ALLOW_OUTSIDE},
        {"classes", required_argument, 0, O_CLASSES},
        {"arch", required_argument, 0, O_ARCH},
        {"input", required_argument, 0, O_INPUT},
        {"init", required_argument, 0, O_INIT},
        {"contrast", required_argument, 0, O_CONTRAST},
        {"freeze-backbone", no_argument, 0, O_FREEZE},
        {"out", required_argument, 0, O_OUT},
        {"storage", required_argument, 0, O_STORAGE},
        {"name", required_argument, 0, O_NAME},
        {"version", required_argument, 0, O_VERSION},
        {"epochs", required_argument, 0, O_EPOCHS},
        {"age-range", required_argument, 0, O_AGE},
        {"batch", required_argument, 0, O_BATCH},
        {"lr", required_argument, 0, O_LR},
        {"weight-decay", required_argument, 0, O_WD},
        {"optimizer", required_argument, 0, O_OPT},
        {"clip", required_argument, 0, O_CLIP},
        {"balanced-sampler", no_argument, 0, O_BAL},
        {"no-augment", no_argument, 0, O_NOAUG},
        {"seed", required_argument, 0, O_SEED},
        {"patience", required_argument, 0, O_PATIENCE},
        {"direct-conv", no_argument, 0, O_DIRECT},
        {"target-sensitivity", required_argument, 0, O_TSENS},
        {"urgent-specificity", required_argument, 0, O_USPEC},
        {"resamples", required_argument, 0, O_RESAMPLES},
        {"threads", required_argument, 0, O_THREADS},
        {"precision", required_argument, 0, O_PREC},
        {"checkpoint-dir", required_argument, 0, O_CKDIR},
        {"resume", no_argument, 0, O_RESUME},
        {"report", required_argument, 0, O_REPORT},
        {"width", required_argument, 0, O_WIDTH}, /* base width (tests, small models) */
        {"no-prefetch", no_argument, 0, O_NOPREFETCH},
        {"accept-weak", no_argument, 0, O_ACCEPT_WEAK},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct cxr_train_options o;
    cxr_train_options_init(&o);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        bool ok = true;
        unsigned long long seed;
        char *end;
        switch (c) {
        case O_DATA: o.data = optarg; break;
        case O_VAL: o.val = optarg; break;
        case O_VALFRAC: ok = parse_double(optarg, &o.val_fraction); break;
        case O_LABELMAP: o.label_map = optarg; break;
        case O_ALLOW_OUTSIDE: o.allow_outside = true; break;
        case O_CLASSES: o.classes = optarg; break;
        case O_ARCH:
            ok = cxr_nn_arch_parse(optarg, &o.arch);
            o.arch_given = true;
            break;
        case O_INPUT:
            ok = sscanf(optarg, "%dx%d", &o.input_height, &o.input_width) == 2 &&
                 o.input_height >= 32 && o.input_width >= 32 && o.input_height <= 4096 &&
                 o.input_width <= 4096;
            o.input_given = true;
            break;
        case O_CONTRAST:
            o.contrast_given = true;
            if (!strcmp(optarg, "none"))
                o.contrast = CXR_NN_CONTRAST_NONE;
            else if (!strcmp(optarg, "equalize"))
                o.contrast = CXR_NN_CONTRAST_EQUALIZE;
            else
                ok = false;
            break;
        case O_INIT: o.init = optarg; break;
        case O_FREEZE: o.freeze_backbone = true; break;
        case O_OUT: o.out = optarg; break;
        case O_STORAGE:
            if (!strcmp(optarg, "f32") || !strcmp(optarg, "fp32"))
                o.storage = CXR_NN_DTYPE_F32;
            else if (!strcmp(optarg, "bf16"))
                o.storage = CXR_NN_DTYPE_BF16;
            else if (!strcmp(optarg, "f16") || !strcmp(optarg, "fp16"))
                o.storage = CXR_NN_DTYPE_F16;
            else
                ok = false;
            break;
        case O_NAME: o.name = optarg; break;
        case O_VERSION: o.version = optarg; break;
        case O_AGE: ok = cli_parse_age_range(optarg, &o.age_min_years, &o.age_max_years); break;
        case O_EPOCHS: ok = parse_int(optarg, &o.epochs); break;
        case O_BATCH: ok = parse_int(optarg, &o.batch); break;
        case O_LR: ok = parse_double(optarg, &o.lr); break;
        case O_WD: ok = parse_double(optarg, &o.weight_decay); break;
        case O_OPT: ok = cxr_nn_optimizer_parse(optarg, &o.optimizer); break;
        case O_CLIP: ok = parse_double(optarg, &o.clip_norm) && o.clip_norm >= 0; break;
        case O_BAL: o.balanced_sampler = true; break;
        case O_NOAUG: o.augment = false; break;
        case O_SEED:
            seed = strtoull(optarg, &end, 10);
            ok = *optarg && !*end && optarg[0] != '-';
            o.seed = seed;
            break;
        case O_PATIENCE: ok = parse_int(optarg, &o.patience); break;
        case O_DIRECT: o.direct_conv = true; break;
        case O_TSENS: ok = parse_double(optarg, &o.target_sensitivity); break;
        case O_USPEC: ok = parse_double(optarg, &o.urgent_specificity); break;
        case O_RESAMPLES:
            ok = parse_int(optarg, &o.resamples) && (o.resamples == 0 || o.resamples >= 100);
            break;
        case O_THREADS: ok = parse_int(optarg, &o.threads) && o.threads >= 0; break;
        case O_PREC:
            if (!strcmp(optarg, "fp32"))
                o.precision = CXR_NN_PRECISION_FP32;
            else if (!strcmp(optarg, "bf16"))
                o.precision = CXR_NN_PRECISION_BF16;
            else
                ok = false;
            break;
        case O_CKDIR: o.checkpoint_dir = optarg; break;
        case O_RESUME: o.resume = true; break;
        case O_REPORT: o.report = optarg; break;
        case O_WIDTH: ok = parse_int(optarg, &o.base_width) && o.base_width >= 1; break;
        case O_NOPREFETCH: o.no_prefetch = true; break;
        case O_ACCEPT_WEAK: o.accept_weak = true; break;
        case 'h': train_usage(stdout); return CLI_EXIT_OK;
        default: train_usage(stderr); return CLI_EXIT_FATAL;
        }
        if (!ok) {
            const char *name = "?";
            for (const struct option *op = opts; op->name; op++)
                if (op->val == c)
                    name = op->name;
            cli_error("train", "bad value '%s' for --%s (see --help)", optarg, name);
            return CLI_EXIT_FATAL;
        }
    }
    if (optind != argc || !o.data || !o.out) {
        if (optind != argc)
            cli_error("train", "unexpected argument '%s'", argv[optind]);
        else
            cli_error("train", "--data and --out are required");
        train_usage(stderr);
        return CLI_EXIT_FATAL;
    }
    char cmdline[4096];
    command_line(argc, argv, cmdline, sizeof cmdline);
    o.command_line = cmdline;
    o.log = stderr;
    o.progress_bar = isatty(STDERR_FILENO) != 0;
    o.stop = &stop_flag;
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    struct cxr_train_result res;
    char err[CXR_ERRLEN] = "";
    enum cxr_status st = cxr_train_run(&o, &res, err);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (st == CXR_ERR_CANCELLED) {
        cli_error("train", "%s (checkpoint kept: rerun with --resume)", err);
        return CLI_EXIT_PARTIAL;
    }
    if (st != CXR_OK) {
        cli_error("train", "%s", err[0] ? err : cxr_status_str(st));
        return CLI_EXIT_FATAL;
    }
    printf("%s: %s, %d epochs (kept %d), validation AUC %.4f, sensitivity %.3f, specificity "
           "%.3f at threshold %.4f; %.1f images/s; %.0f s%s\n",
           res.model_path, res.model_sha256, (int)res.epochs_run, (int)res.best_epoch,
           res.validation.auc.value, res.validation.sensitivity.value,
           res.validation.specificity.value, res.operating_threshold, res.images_per_second,
           res.seconds, res.weak ? "; WEAK (see the warning)" : "");
    if (res.weak && !o.accept_weak) {
        cli_error("train",
                  "the model is weak (validation AUC's lower 95 %% bound <= %.2f): %s was not "
                  "written; the model is at %s (--accept-weak writes it to --out)",
                  CXR_TRAIN_WEAK_AUC_LOWER, o.out, res.model_path);
        return CLI_EXIT_PARTIAL;
    }
    return res.skipped ? CLI_EXIT_PARTIAL : CLI_EXIT_OK;
}
