/* node_settings.c — the node's settings from the configuration's node,
 * http, allow and destination sections (see cxr/node.h), with the checks
 * that need several keys at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cxr/log.h"
#include "node_internal.h"

static bool copy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src ? src : "");
    if (n >= size)
        return false;
    memcpy(dst, src ? src : "", n + 1);
    return true;
}

/* A path from the config, resolved against the config file's folder. */
static bool copy_path(const struct cxr_conf *conf, char *dst, size_t size, const char *src)
{
    if (!src || !*src) {
        dst[0] = '\0';
        return true;
    }
    char *abs = cxr_conf_resolve_path(conf, src);
    bool ok = abs && copy(dst, size, abs);
    free(abs);
    return ok;
}

void cxr_node_settings_defaults(struct cxr_node_settings *s)
{
    struct cxr_conf *conf = NULL;
    char err[CXR_ERRLEN];
    memset(s, 0, sizeof *s);
    if (cxr_conf_defaults(&conf) == CXR_OK)
        cxr_node_settings_from_conf(conf, s, err);
    cxr_conf_free(conf);
}

#define BAD(...)                                \
    do {                                        \
        snprintf(err, CXR_ERRLEN, __VA_ARGS__); \
        return CXR_ERR_CONF_VALUE;              \
    } while (0)

enum cxr_status cxr_node_settings_from_conf(const struct cxr_conf *conf,
                                            struct cxr_node_settings *s, char *err)
{
    const struct cxr_conf_node *c = &conf->node;
    memset(s, 0, sizeof *s);
    if (!copy(s->ae_title, sizeof s->ae_title, c->ae_title) || !c->ae_title[0])
        BAD("node/ae-title '%s': expected 1 to 16 characters", c->ae_title);
    if (!copy(s->bind_address, sizeof s->bind_address, c->bind_address))
        BAD("node/bind-address is too long");
    s->port = (uint16_t)c->port;
    s->max_associations = (uint32_t)c->max_associations;
    s->max_pdu = (uint32_t)c->max_pdu;
    s->acse_timeout_s = (uint32_t)c->acse_timeout_s;
    s->dimse_timeout_s = (uint32_t)c->dimse_timeout_s;
    s->connect_timeout_s = (uint32_t)c->connect_timeout_s;
    s->check_called_ae = c->check_called_ae;
    s->tls_enabled = c->tls;
    s->tls_verify_peer = c->tls_verify_peer;
    if (!copy_path(conf, s->tls_certificate, sizeof s->tls_certificate, c->tls_certificate) ||
        !copy_path(conf, s->tls_private_key, sizeof s->tls_private_key, c->tls_private_key) ||
        !copy_path(conf, s->tls_ca_certificates, sizeof s->tls_ca_certificates,
                   c->tls_ca_certificates) ||
        !copy_path(conf, s->spool_dir, sizeof s->spool_dir, c->spool_dir))
        BAD("a node path is longer than %d characters", CXR_NODE_PATHLEN - 1);
    if (s->tls_enabled && (!s->tls_certificate[0] || !s->tls_private_key[0]))
        BAD("node/tls is true but node/tls-certificate or node/tls-private-key is empty");
    if (s->tls_verify_peer && !s->tls_ca_certificates[0])
        BAD("node/tls-verify-peer is true but node/tls-ca-certificates is empty");
    s->disk_min_free_mb = (uint64_t)c->disk_min_free_mb;
    s->spool_retention_hours = (uint32_t)c->spool_retention_hours;
    s->spool_inline_max_kb = (uint32_t)c->spool_inline_max_kb;
    s->worker_threads = c->worker_threads;
    s->batch_wait_ms = (uint32_t)c->batch_wait_ms;
    s->study_stable_s = (uint32_t)c->study_stable_seconds;
    s->retry_base_s = (uint32_t)c->retry_base_seconds;
    s->retry_cap_s = (uint32_t)c->retry_cap_seconds;
    s->retry_max_attempts = (uint32_t)c->retry_max_attempts;
    if (s->retry_cap_s < s->retry_base_s)
        BAD("node/retry-cap-seconds (%u) is below node/retry-base-seconds (%u)", s->retry_cap_s,
            s->retry_base_s);

    s->http_enabled = conf->http.enabled;
    if (!copy(s->http_bind_address, sizeof s->http_bind_address, conf->http.bind_address))
        BAD("http/bind-address is too long");
    s->http_port = (uint16_t)conf->http.port;
    if (!copy(s->http_allowed_hosts, sizeof s->http_allowed_hosts,
              conf->http.allowed_hosts ? conf->http.allowed_hosts : ""))
        BAD("http/allowed-hosts is too long");
    s->worklist_show_patient_id = conf->http.show_patient_id;
    s->worklist_hours = (uint32_t)conf->http.worklist_hours;

    if (conf->allow_count > CXR_DICOM_NET_MAX_PEERS)
        BAD("at most %d <allow> sections", CXR_DICOM_NET_MAX_PEERS);
    for (uint32_t i = 0; i < conf->allow_count; i++) {
        const struct cxr_conf_allow *a = &conf->allow[i];
        if (!a->ae_title[0] && !a->host[0])
            BAD("<allow> number %u names neither an ae-title nor a host (it would allow everyone)",
                i + 1);
        if (!copy(s->allowed_peers[i].ae_title, sizeof s->allowed_peers[i].ae_title, a->ae_title) ||
            !copy(s->allowed_peers[i].host, sizeof s->allowed_peers[i].host, a->host))
            BAD("<allow> number %u: a value is too long", i + 1);
    }
    s->allowed_peer_count = conf->allow_count;

    if (conf->destination_count > CXR_NODE_MAX_DESTINATIONS)
        BAD("at most %d <destination> sections", CXR_NODE_MAX_DESTINATIONS);
    for (uint32_t i = 0; i < conf->destination_count; i++) {
        const struct cxr_conf_destination *d = &conf->destinations[i];
        struct cxr_node_destination *o = &s->destinations[i];
        if (!copy(o->ae_title, sizeof o->ae_title, d->ae_title) ||
            !copy(o->calling_ae_title, sizeof o->calling_ae_title, d->calling_ae_title) ||
            !copy(o->host, sizeof o->host, d->host))
            BAD("<destination> number %u: a value is too long", i + 1);
        o->port = (uint16_t)d->port;
        o->tls = d->tls;
        if (d->name[0]) {
            if (!copy(o->name, sizeof o->name, d->name))
                BAD("<destination> number %u: name is too long", i + 1);
        } else {
            snprintf(o->name, sizeof o->name, "%.16s@%.30s:%u", d->ae_title, d->host,
                     (unsigned)o->port);
        }
        for (uint32_t j = 0; j < i; j++)
            if (!strcmp(s->destinations[j].name, o->name))
                BAD("two <destination> sections are named '%s'; give each a unique <name>",
                    o->name);
    }
    s->destination_count = conf->destination_count;
    return CXR_OK;
}

int32_t cxr_node_settings_workers(const struct cxr_node_settings *s, int32_t online_cpus)
{
    int32_t w = (int32_t)s->worker_threads;
    if (w <= 0)
        w = online_cpus < 2 ? 2 : online_cpus > 8 ? 8 : online_cpus;
    return w > NODE_MAX_WORKERS ? NODE_MAX_WORKERS : w;
}
