/* node_check.c — cxr_node_check (see cxr/node.h): what `cxr-triage config
 * check` tries, built by the same functions a start uses (node.c:
 * node_settings_for, node_engine_new, node_scp_config), so that a
 * configuration that passes the check does not fail at start for a path or
 * a model. Nothing is created, locked or bound. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node_internal.h"

struct check {
    cxr_node_check_fn fn;
    void *ctx;
    enum cxr_status first; /* the status of the first failure */
};

static void report(struct check *c, enum cxr_status st, const char *item, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void report(struct check *c, enum cxr_status st, const char *item, const char *fmt, ...)
{
    char detail[CXR_ERRLEN + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (st != CXR_OK && c->first == CXR_OK)
        c->first = st;
    if (c->fn)
        c->fn(c->ctx, st == CXR_OK, item, detail);
}

/* Whether the node's user could write into `dir`, or create it (as
 * node_mkdirs does): the folder is a writable folder, or its nearest existing
 * ancestor is. `why` (len bytes) says what is wrong, or that it exists or
 * where it will be created. */
static bool folder_usable(const char *dir, char *why, size_t len)
{
    char buf[CXR_NODE_PATHLEN * 2];
    snprintf(buf, sizeof buf, "%s", dir);
    for (bool self = true;; self = false) {
        struct stat sb;
        const char *what = self ? "it" : buf;
        if (stat(buf, &sb) == 0) {
            if (!S_ISDIR(sb.st_mode)) {
                snprintf(why, len, "%s is not a folder", what);
                return false;
            }
            if (access(buf, W_OK | X_OK) != 0) {
                snprintf(why, len, "%s is not writable by this user (%s)", what, strerror(errno));
                return false;
            }
            if (self)
                snprintf(why, len, "a writable folder");
            else
                snprintf(why, len, "does not exist yet; will be created in %s", buf);
            return true;
        }
        if (errno == ENOTDIR) {
            snprintf(why, len, "a part of the path is not a folder");
            return false;
        }
        if (errno != ENOENT) {
            snprintf(why, len, "%s: %s", buf, strerror(errno));
            return false;
        }
        char *slash = strrchr(buf, '/');
        if (!slash) /* a relative path's first component: the working directory */
            snprintf(buf, sizeof buf, ".");
        else if (slash == buf)
            snprintf(buf, sizeof buf, "/");
        else
            *slash = '\0';
    }
}

/* A folder this user writes into (the configuration's relative path
 * resolved against its file's folder): reported under `item`. */
static void check_folder(struct check *c, const struct cxr_conf *conf, const char *item,
                         const char *path)
{
    char why[CXR_NODE_PATHLEN * 2 + 128];
    char *dir = cxr_conf_resolve_path(conf, path);
    if (!dir)
        report(c, CXR_ERR_NOMEM, item, "out of memory");
    else if (folder_usable(dir, why, sizeof why))
        report(c, CXR_OK, item, "%s: %s", dir, why);
    else
        report(c, CXR_ERR_IO, item, "%s: %s", dir, why);
    free(dir);
}

/* A file the node reads at start or for a destination. */
static void check_readable(struct check *c, const char *item, const char *key, const char *path)
{
    if (!path[0])
        return;
    if (access(path, R_OK) != 0)
        report(c, CXR_ERR_IO, item, "%s (%s): cannot read: %s", path, key, strerror(errno));
}

/* The model, its backend and its network, as a start builds them. */
static void check_model(struct check *c, const struct cxr_conf *conf, const char *model_path)
{
    char err[CXR_ERRLEN] = "", note[CXR_ERRLEN] = "";
    cxr_dicom_global_init();
    struct cxr_triage_engine *engine = NULL;
    enum cxr_status st = node_engine_new(conf, model_path, &engine, note, err);
    if (st == CXR_OK) {
        const struct cxr_nn_model_meta *meta = cxr_triage_engine_model_meta(engine);
        report(c, CXR_OK, "model", "%s: %s%s", cxr_triage_engine_model_path(engine),
               cxr_triage_engine_describe(engine),
               cxr_nn_model_meta_untrained(meta)
                   ? " (UNTRAINED: random weights, its scores mean nothing)"
                   : "");
    } else {
        report(c, st, "model", "%s", err);
    }
    cxr_triage_engine_free(engine);
}

enum cxr_status cxr_node_check_plugin(const struct cxr_conf *conf, cxr_node_check_fn fn, void *ctx)
{
    struct check c = {.fn = fn, .ctx = ctx, .first = CXR_OK};
    check_model(&c, conf, NULL);
    const char *sd = conf->plugin.state_dir;
    if (!sd || !sd[0]) {
        report(&c, CXR_OK, "plugin/state-dir",
               "empty: the plugin keeps its queue in Orthanc's IndexDirectory/cxr-triage");
        return c.first;
    }
    check_folder(&c, conf, "plugin/state-dir", sd);
    return c.first;
}

static uint16_t no_store(void *ctx, const struct cxr_dicom_store_event *ev)
{
    (void)ctx;
    (void)ev;
    return CXR_DIMSE_PROCESSING_FAILURE;
}

enum cxr_status cxr_node_check(const struct cxr_conf *conf, const struct cxr_node_options *opt,
                               cxr_node_check_fn fn, void *ctx)
{
    struct check c = {.fn = fn, .ctx = ctx, .first = CXR_OK};
    char err[CXR_ERRLEN] = "", why[CXR_NODE_PATHLEN * 2 + 128];
    struct cxr_node_settings *s = calloc(1, sizeof *s);
    if (!s) {
        report(&c, CXR_ERR_NOMEM, "settings", "out of memory");
        return c.first;
    }
    enum cxr_status st = node_settings_for(opt, conf, s, err);
    bool have_settings = st == CXR_OK;
    report(&c, st, "settings", "%s", have_settings ? "the node's keys fit together" : err);

    check_model(&c, conf, opt ? opt->model_path : NULL);
    if (!have_settings) {
        free(s);
        return c.first;
    }

    /* the spool folder and its job store */
    if (folder_usable(s->spool_dir, why, sizeof why)) {
        char db[CXR_NODE_PATHLEN + 16];
        cxr_node_store_path(s->spool_dir, db, sizeof db);
        if (access(db, F_OK) == 0 && access(db, R_OK | W_OK) != 0) {
            report(&c, CXR_ERR_IO, "spool",
                   "%s: the job store is not readable and writable by this user: %s", db,
                   strerror(errno));
        } else {
            long pid = cxr_node_spool_holder(s->spool_dir);
            char held[160] = "";
            if (pid > 0)
                snprintf(held, sizeof held,
                         "; held by the running node, pid %ld (another serve here is refused "
                         "while it runs)",
                         pid);
            report(&c, CXR_OK, "spool", "%s: %s%s", s->spool_dir, why, held);
        }
    } else {
        report(&c, CXR_ERR_IO, "spool", "%s (node/spool-dir): %s", s->spool_dir, why);
    }

    /* sr/output-dir: the node writes a copy of each SR there */
    if (conf->sr.output_dir && conf->sr.output_dir[0])
        check_folder(&c, conf, "sr/output-dir", conf->sr.output_dir);

    /* The DICOM service as a start builds it (binds nothing here): its AE
     * title, bind address, allowed peers (CIDR blocks) and, with TLS, the
     * files it loads; destinations with TLS use the same files at each
     * delivery. */
    {
        struct cxr_dicom_scp_config sc;
        char tmp[CXR_NODE_PATHLEN + 8];
        snprintf(tmp, sizeof tmp, "%s/tmp", s->spool_dir); /* named, not used here */
        node_scp_config(s, tmp, &sc);
        struct cxr_dicom_scp *scp = NULL;
        st = cxr_dicom_scp_new(&sc, no_store, NULL, NULL, &scp, err);
        cxr_dicom_scp_free(scp);
        if (st == CXR_OK)
            report(&c, st, s->tls_enabled ? "tls" : "dicom", "%s",
                   s->tls_enabled ? "certificate, key and CA files load"
                                  : "AE title, bind address and allowed peers accepted");
        else
            report(&c, st, s->tls_enabled ? "tls" : "dicom", "DICOM service: %s", err);
    }

    /* HTTP: the address it binds, checked as a start checks it */
    if (s->http_enabled) {
        st = cxr_node_http_check_bind(s->http_bind_address, err);
        report(&c, st, "http", "%s", st == CXR_OK ? "the bind address is an IP address" : err);
    }
    bool dest_tls = false;
    for (size_t i = 0; i < s->destination_count; i++)
        dest_tls = dest_tls || s->destinations[i].tls;
    if (dest_tls && !s->tls_enabled) {
        enum cxr_status before = c.first;
        c.first = CXR_OK;
        check_readable(&c, "tls", "node/tls-certificate", s->tls_certificate);
        check_readable(&c, "tls", "node/tls-private-key", s->tls_private_key);
        check_readable(&c, "tls", "node/tls-ca-certificates", s->tls_ca_certificates);
        if (c.first == CXR_OK)
            report(&c, CXR_OK, "tls", "the files of the destinations' TLS are readable");
        if (before != CXR_OK)
            c.first = before;
    }
    free(s);
    return c.first;
}
