/* cmd_model.c — `cxr-triage model init|info|set`. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cxr/nn.h"

static void model_usage(FILE *fp)
{
    fprintf(fp,
            "usage: cxr-triage model init --arch resnet18|resnet34|resnet50 --out FILE\n"
            "                             [--seed N] [--channels 1|3] [--classes N]\n"
            "                             [--input HxW] [--storage f32|f16|bf16] [--name NAME]\n"
            "         a new model with seeded He-initialised (untrained) weights\n"
            "       cxr-triage model info [--json] FILE\n"
            "         architecture, parameters, metadata and SHA-256 of a model file\n"
            "       cxr-triage model set FILE --out FILE [--age-range MIN-MAX|none]\n"
            "                            [--name NAME] [--version V] [--note TEXT]\n"
            "         a copy with edited metadata, same weights and storage type (e.g. the\n"
            "         intended population after a local validation); the gate checks the\n"
            "         patient's age against --age-range\n");
}

static bool parse_storage(const char *s, enum cxr_nn_dtype *out)
{
    if (!strcmp(s, "f32") || !strcmp(s, "fp32"))
        *out = CXR_NN_DTYPE_F32;
    else if (!strcmp(s, "f16") || !strcmp(s, "fp16"))
        *out = CXR_NN_DTYPE_F16;
    else if (!strcmp(s, "bf16"))
        *out = CXR_NN_DTYPE_BF16;
    else
        return false;
    return true;
}

static int model_init(int argc, char **argv)
{
    static const struct option opts[] = {
        {"arch", required_argument, 0, 'a'},    {"out", required_argument, 0, 'o'},
        {"seed", required_argument, 0, 's'},    {"channels", required_argument, 0, 'c'},
        {"classes", required_argument, 0, 'k'}, {"input", required_argument, 0, 'i'},
        {"storage", required_argument, 0, 't'}, {"name", required_argument, 0, 'n'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    const char *arch = NULL, *out = NULL, *name = NULL;
    unsigned long long seed = 1;
    int channels = 1, classes = 2, ih = 224, iw = 224;
    enum cxr_nn_dtype storage = CXR_NN_DTYPE_F32;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'a': arch = optarg; break;
        case 'o': out = optarg; break;
        case 'n': name = optarg; break;
        case 's':
            seed = strtoull(optarg, &end, 10);
            if (!*optarg || *end) {
                cli_error("model init", "--seed expects a non-negative integer, got '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            break;
        case 'c':
            channels = atoi(optarg);
            if (channels != 1 && channels != 3) {
                cli_error("model init", "--channels expects 1 or 3, got '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            break;
        case 'k':
            classes = atoi(optarg);
            if (classes < 1 || classes > CXR_NN_MAX_CLASSES) {
                cli_error("model init", "--classes expects 1..%d, got '%s'", CXR_NN_MAX_CLASSES,
                          optarg);
                return CLI_EXIT_FATAL;
            }
            break;
        case 'i':
            if (sscanf(optarg, "%dx%d", &ih, &iw) != 2 || ih < 16 || iw < 16 || ih > 4096 ||
                iw > 4096) {
                cli_error("model init", "--input expects HxW with 16..4096, got '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            break;
        case 't':
            if (!parse_storage(optarg, &storage)) {
                cli_error("model init", "--storage expects f32, f16 or bf16, got '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            break;
        case 'h': model_usage(stdout); return CLI_EXIT_OK;
        default: model_usage(stderr); return CLI_EXIT_FATAL;
        }
    }
    if (!arch || !out || optind != argc) {
        model_usage(stderr);
        return CLI_EXIT_FATAL;
    }
    struct cxr_nn_model_meta meta;
    enum cxr_nn_arch a;
    if (!cxr_nn_arch_parse(arch, &a)) {
        cli_error("model init", "unknown --arch '%s' (resnet18, resnet34 or resnet50)", arch);
        return CLI_EXIT_FATAL;
    }
    cxr_nn_model_meta_defaults(&meta, a);
    meta.channels = channels;
    meta.num_classes = classes;
    meta.input_height = ih;
    meta.input_width = iw;
    if (classes == 1)
        meta.positive_class = 0;
    for (int ch = 1; ch < 3; ch++) {
        meta.mean[ch] = meta.mean[0];
        meta.std[ch] = meta.std[0];
    }
    snprintf(meta.name, sizeof meta.name, "%s", name ? name : "untrained");
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_model *m = NULL;
    enum cxr_status st = cxr_nn_model_init(&meta, seed, &m, err);
    if (st == CXR_OK) {
        cxr_nn_model_set_text(m, "description",
                              "UNTRAINED: He-initialised random weights, for testing only");
        st = cxr_nn_model_save(m, out, storage, err);
    }
    if (st != CXR_OK) {
        cli_error("model init", "%s", err[0] ? err : cxr_status_str(st));
        cxr_nn_model_free(m);
        return CLI_EXIT_FATAL;
    }
    printf("%s: %s, %lld parameters, seed %llu, sha256 %s (untrained: scores are meaningless)\n",
           out, cxr_nn_arch_name(a), (long long)cxr_nn_model_param_count(m), seed,
           cxr_nn_model_sha256(m));
    cxr_nn_model_free(m);
    return CLI_EXIT_OK;
}

static int model_info(int argc, char **argv)
{
    bool json = false;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            model_usage(stdout);
            return CLI_EXIT_OK;
        } else if (!path && argv[i][0] != '-')
            path = argv[i];
        else {
            model_usage(stderr);
            return CLI_EXIT_FATAL;
        }
    }
    if (!path) {
        model_usage(stderr);
        return CLI_EXIT_FATAL;
    }
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_model *m = NULL;
    enum cxr_status st = cxr_nn_model_load(path, &m, err);
    if (st != CXR_OK) {
        cli_error("model info", "%s", err[0] ? err : cxr_status_str(st));
        return CLI_EXIT_FATAL;
    }
    cxr_nn_model_describe(m, stdout, json);
    cxr_nn_model_free(m);
    return CLI_EXIT_OK;
}

static int model_set(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},
        {"age-range", required_argument, 0, 'a'},
        {"name", required_argument, 0, 'n'},
        {"version", required_argument, 0, 'v'},
        {"note", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *out = NULL, *name = NULL, *version = NULL, *note = NULL;
    bool age_given = false;
    double amin = NAN, amax = NAN;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'n': name = optarg; break;
        case 'v': version = optarg; break;
        case 't': note = optarg; break;
        case 'a':
            if (!cli_parse_age_range(optarg, &amin, &amax)) {
                cli_error("model set",
                          "--age-range expects MIN-MAX in years (0..150, MIN <= MAX) or none, "
                          "got '%s'",
                          optarg);
                return CLI_EXIT_FATAL;
            }
            age_given = true;
            break;
        case 'h': model_usage(stdout); return CLI_EXIT_OK;
        default: model_usage(stderr); return CLI_EXIT_FATAL;
        }
    }
    if (!out || optind != argc - 1) {
        model_usage(stderr);
        return CLI_EXIT_FATAL;
    }
    const char *in = argv[optind];
    if ((name && (!*name || strlen(name) >= 64)) ||
        (version && (!*version || strlen(version) >= 32))) {
        cli_error("model set", "--name takes 1..63 characters and --version 1..31");
        return CLI_EXIT_FATAL;
    }
    char err[CXR_ERRLEN] = "";
    struct cxr_nn_model *m = NULL;
    enum cxr_status st = cxr_nn_model_load(in, &m, err);
    if (st != CXR_OK) {
        cli_error("model set", "%s", err[0] ? err : cxr_status_str(st));
        return CLI_EXIT_FATAL;
    }
    struct cxr_nn_model_meta *mm = cxr_nn_model_meta_mut(m);
    if (age_given) {
        mm->age_min_years = amin;
        mm->age_max_years = amax;
    }
    if (name)
        snprintf(mm->name, sizeof mm->name, "%s", name);
    if (version)
        snprintf(mm->version, sizeof mm->version, "%s", version);
    if (note)
        st = cxr_nn_model_append_note(m, note);
    if (st == CXR_OK)
        st = cxr_nn_model_save(m, out, cxr_nn_model_storage(m), err);
    if (st != CXR_OK) {
        cli_error("model set", "%s: %s", out, err[0] ? err : cxr_status_str(st));
        cxr_nn_model_free(m);
        return CLI_EXIT_FATAL;
    }
    printf("%s: sha256 %s\n", out, cxr_nn_model_sha256(m));
    cxr_nn_model_free(m);
    return CLI_EXIT_OK;
}

int cmd_model(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        model_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_FATAL : CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "init"))
        return model_init(argc - 1, argv + 1);
    if (!strcmp(argv[1], "info"))
        return model_info(argc - 1, argv + 1);
    if (!strcmp(argv[1], "set"))
        return model_set(argc - 1, argv + 1);
    cli_error("model", "unknown subcommand '%s'", argv[1]);
    model_usage(stderr);
    return CLI_EXIT_FATAL;
}
