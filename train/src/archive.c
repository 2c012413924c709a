/* archive.c — the sources of labeled data: a directory tree, an archive
 * streamed through libarchive (never extracted to disk), or a CSV manifest.
 * Each reader hands entries to the loader (dataset.c) in a deterministic
 * order and records what it cannot use as a skip with the reason. */
#include <archive.h>
#include <archive_entry.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cxr/file.h"
#include "dataset_internal.h"

#define MAX_DEPTH          32
#define MAX_MANIFEST_BYTES (64u << 20)
#define READ_CHUNK         (1u << 16)

bool ds_normalize_entry_name(char *name)
{
    for (char *p = name; *p; p++)
        if (*p == '\\')
            *p = '/';
    if (name[0] == '/')
        return false;
    if (isalpha((unsigned char)name[0]) && name[1] == ':')
        return false; /* "C:..." */
    /* Rebuild from components, dropping "" and "."; refuse "..". */
    char *w = name;
    const char *r = name;
    while (*r) {
        const char *end = strchr(r, '/');
        size_t n = end ? (size_t)(end - r) : strlen(r);
        if (n == 2 && r[0] == '.' && r[1] == '.')
            return false;
        if (n > 0 && !(n == 1 && r[0] == '.')) {
            if (w != name)
                *w++ = '/';
            memmove(w, r, n);
            w += n;
        }
        r += n;
        if (*r == '/')
            r++;
    }
    *w = '\0';
    return true;
}

/* Dot files and macOS resource forks are not data. */
static bool ignored_name(const char *name)
{
    for (const char *c = name; *c;) {
        const char *end = strchr(c, '/');
        size_t n = end ? (size_t)(end - c) : strlen(c);
        if ((n > 0 && c[0] == '.') || (n == 8 && strncmp(c, "__MACOSX", 8) == 0))
            return true;
        c += n;
        if (*c == '/')
            c++;
    }
    return false;
}

/* Reads a whole regular file of at most `cap` bytes. */
static enum cxr_status read_file(const char *path, uint64_t cap, uint8_t **out, size_t *len,
                                 char *why, size_t whycap)
{
    *out = NULL;
    *len = 0;
    /* non-blocking open, then fstat: a FIFO or device must not hang the read */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        snprintf(why, whycap, "cannot open: %s", strerror(errno));
        return CXR_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, whycap, "cannot stat: %s", strerror(errno));
        close(fd);
        return CXR_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, whycap, "not a regular file (it is %s)", cxr_file_kind(st.st_mode));
        close(fd);
        return CXR_ERR_IO;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    if ((uint64_t)st.st_size > cap) {
        close(fd);
        snprintf(why, whycap, "%lld bytes, more than the %llu-byte limit per entry",
                 (long long)st.st_size, (unsigned long long)cap);
        return CXR_ERR_LIMIT;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        close(fd);
        snprintf(why, whycap, "out of memory");
        return CXR_ERR_NOMEM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(why, whycap, "read failed: %s", r < 0 ? strerror(errno) : "file shrank");
            free(buf);
            close(fd);
            return CXR_ERR_IO;
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
    return CXR_OK;
}

/* ------------------------------------------------------------------ directory */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One file or folder found while walking: label it, read it, submit it. */
static enum cxr_status visit_file(struct ds_loader *L, const char *path, const char *rel)
{
    char why[512];
    int32_t label = ds_label_from_path(L, rel, why, sizeof why);
    if (label < 0)
        return ds_skip(L, rel, CXR_ERR_TRIAGE_ARCHIVE, "%s", why);
    uint8_t *buf;
    size_t len;
    enum cxr_status st = read_file(path, ds_max_entry_bytes(L), &buf, &len, why, sizeof why);
    if (st != CXR_OK)
        return ds_skip(L, rel, st, "%s", why);
    return ds_submit(L, rel, buf, len, label, NULL);
}

static enum cxr_status walk(struct ds_loader *L, const char *dir, const char *rel, int depth,
                            char *err)
{
    if (depth > MAX_DEPTH)
        return ds_skip(L, rel, CXR_ERR_LIMIT, "folders nested deeper than %d levels", MAX_DEPTH);
    DIR *d = opendir(dir);
    if (!d) {
        if (depth == 0)
            return cxr_seterr(err, CXR_ERR_TRIAGE_ARCHIVE, "%s: cannot read the folder: %s", dir,
                              strerror(errno));
        return ds_skip(L, rel, CXR_ERR_IO, "cannot read the folder: %s", strerror(errno));
    }
    char **names = NULL;
    size_t n = 0, capn = 0;
    enum cxr_status st = CXR_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "__MACOSX") == 0)
            continue;
        if (n == capn) {
            size_t nc = capn ? capn * 2 : 64;
            char **nn = realloc(names, nc * sizeof *nn);
            if (!nn) {
                st = cxr_seterr(err, CXR_ERR_NOMEM, "out of memory listing %s", dir);
                goto done;
            }
            names = nn;
            capn = nc;
        }
        if (!(names[n] = strdup(e->d_name))) {
            st = cxr_seterr(err, CXR_ERR_NOMEM, "out of memory listing %s", dir);
            goto done;
        }
        n++;
    }
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && st == CXR_OK; i++) {
        char *path = NULL, *sub = NULL;
        if (asprintf(&path, "%s/%s", dir, names[i]) < 0) {
            st = cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
            break;
        }
        if (rel[0] ? asprintf(&sub, "%s/%s", rel, names[i]) < 0 : !(sub = strdup(names[i]))) {
            free(path);
            st = cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
            break;
        }
        struct stat lst, fst;
        if (lstat(path, &lst) != 0) {
            st = ds_skip(L, sub, CXR_ERR_IO, "cannot stat: %s", strerror(errno));
        } else if (S_ISDIR(lst.st_mode)) {
            st = walk(L, path, sub, depth + 1, err);
        } else if (S_ISLNK(lst.st_mode)) {
            if (stat(path, &fst) != 0)
                st = ds_skip(L, sub, CXR_ERR_IO, "broken symbolic link");
            else if (S_ISREG(fst.st_mode))
                st = visit_file(L, path, sub);
            else if (S_ISDIR(fst.st_mode))
                st = ds_skip(L, sub, CXR_ERR_UNSUPPORTED,
                             "symbolic link to a folder (not followed)");
            else
                st = ds_skip(L, sub, CXR_ERR_UNSUPPORTED, "symbolic link to %s (not followed)",
                             cxr_file_kind(fst.st_mode));
        } else if (S_ISREG(lst.st_mode)) {
            st = visit_file(L, path, sub);
        } else {
            st = ds_skip(L, sub, CXR_ERR_UNSUPPORTED, "not a regular file (it is %s)",
                         cxr_file_kind(lst.st_mode));
        }
        free(path);
        free(sub);
    }
done:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return st;
}

enum cxr_status ds_read_directory(struct ds_loader *L, const char *root, char *err)
{
    return walk(L, root, "", 0, err);
}

/* ------------------------------------------------------------------ archives */

/* Reads the current entry's data, at most `cap` bytes. */
static enum cxr_status read_entry_data(struct archive *a, uint64_t cap, uint8_t **out, size_t *len,
                                       char *why, size_t whycap, bool *fatal)
{
    *out = NULL;
    *len = 0;
    *fatal = false;
    size_t n = 0, capb = 0;
    uint8_t *buf = NULL;
    for (;;) {
        if (capb - n < READ_CHUNK) {
            size_t nc = capb ? capb * 2 : 4 * READ_CHUNK;
            if (nc > cap + READ_CHUNK)
                nc = (size_t)cap + READ_CHUNK; /* room to notice one byte too many */
            if (nc <= capb) {
                free(buf);
                snprintf(why, whycap, "more than the %llu-byte limit per entry",
                         (unsigned long long)cap);
                return CXR_ERR_LIMIT;
            }
            uint8_t *nb = realloc(buf, nc);
            if (!nb) {
                free(buf);
                snprintf(why, whycap, "out of memory");
                return CXR_ERR_NOMEM;
            }
            buf = nb;
            capb = nc;
        }
        la_ssize_t r = archive_read_data(a, buf + n, capb - n);
        if (r == 0)
            break;
        if (r < 0) {
            snprintf(why, whycap, "cannot read the entry: %s", archive_error_string(a));
            *fatal = r == ARCHIVE_FATAL;
            free(buf);
            return CXR_ERR_TRIAGE_ARCHIVE;
        }
        n += (size_t)r;
        if (n > cap) {
            free(buf);
            snprintf(why, whycap, "more than the %llu-byte limit per entry",
                     (unsigned long long)cap);
            return CXR_ERR_LIMIT;
        }
    }
    *out = buf;
    *len = n;
    return CXR_OK;
}

enum cxr_status ds_read_archive(struct ds_loader *L, const char *path, char *kind, size_t kind_cap,
                                char *err)
{
    struct archive *a = archive_read_new();
    if (!a)
        return cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
    archive_read_support_filter_all(a);
    archive_read_support_format_all(a);
    enum cxr_status st = CXR_OK;
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK) {
        st = cxr_seterr(err, CXR_ERR_TRIAGE_ARCHIVE, "%s: cannot open: %s", path,
                        archive_error_string(a));
        goto done;
    }
    const uint64_t cap = ds_max_entry_bytes(L);
    bool first = true;
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r == ARCHIVE_RETRY)
            continue;
        if (r == ARCHIVE_FATAL) {
            if (first)
                st = cxr_seterr(err, CXR_ERR_TRIAGE_ARCHIVE,
                                "%s: not a folder, a .csv manifest or an archive this build reads "
                                "(%s)",
                                path, archive_error_string(a));
            else
                st = cxr_seterr(err, CXR_ERR_TRIAGE_ARCHIVE,
                                "%s: the archive is damaged after its last good entry: %s", path,
                                archive_error_string(a));
            goto done;
        }
        if (first) {
            first = false;
            const char *fmt = archive_format_name(a), *flt = archive_filter_name(a, 0);
            if (flt && strcmp(flt, "none") != 0)
                snprintf(kind, kind_cap, "%s, %s", fmt ? fmt : "archive", flt);
            else
                snprintf(kind, kind_cap, "%s", fmt ? fmt : "archive");
        }
        const char *raw = archive_entry_pathname_utf8(e);
        if (!raw)
            raw = archive_entry_pathname(e);
        if (!raw || !raw[0]) {
            if ((st = ds_skip(L, "(unnamed entry)", CXR_ERR_TRIAGE_ARCHIVE,
                              "entry name unreadable")) != CXR_OK)
                goto done;
            continue;
        }
        char *name = strdup(raw);
        if (!name) {
            st = cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
            goto done;
        }
        mode_t type = archive_entry_filetype(e);
        if (r == ARCHIVE_FAILED) {
            st = ds_skip(L, raw, CXR_ERR_TRIAGE_ARCHIVE, "unreadable entry: %s",
                         archive_error_string(a));
        } else if (!ds_normalize_entry_name(name)) {
            st = ds_skip(L, raw, CXR_ERR_TRIAGE_ARCHIVE,
                         "unsafe path refused (absolute, or with a '..' component)");
        } else if (type == AE_IFDIR || !name[0] || ignored_name(name)) {
            /* folders and dot files carry no data */
        } else if (type != AE_IFREG || archive_entry_hardlink(e)) {
            st = ds_skip(L, name, CXR_ERR_UNSUPPORTED, "not a regular file (link or device)");
        } else if (archive_entry_size_is_set(e) && archive_entry_size(e) >= 0 &&
                   (uint64_t)archive_entry_size(e) > cap) {
            st = ds_skip(L, name, CXR_ERR_LIMIT, "%lld bytes, more than the %llu-byte limit",
                         (long long)archive_entry_size(e), (unsigned long long)cap);
        } else {
            char why[512];
            int32_t label = ds_label_from_path(L, name, why, sizeof why);
            if (label < 0) {
                st = ds_skip(L, name, CXR_ERR_TRIAGE_ARCHIVE, "%s", why);
            } else {
                uint8_t *buf;
                size_t len;
                bool fatal;
                enum cxr_status rs = read_entry_data(a, cap, &buf, &len, why, sizeof why, &fatal);
                if (rs == CXR_OK) {
                    st = ds_submit(L, name, buf, len, label, NULL);
                } else if (fatal) {
                    st = cxr_seterr(err, CXR_ERR_TRIAGE_ARCHIVE, "%s: entry %s: %s", path, name,
                                    why);
                } else {
                    st = ds_skip(L, name, rs, "%s", why);
                }
            }
        }
        free(name);
        if (st != CXR_OK)
            goto done;
    }
    if (first)
        snprintf(kind, kind_cap, "%s", "empty archive");
done:
    archive_read_free(a);
    return st;
}

/* ------------------------------------------------------------------ CSV manifest */

/* One RFC 4180 record from text[*pos..]: fields are written NUL-terminated
 * into `buf` one after another and pointed to by fields[]. Unquoted fields
 * are trimmed. Returns the field count (0 for a blank line), -1 at the end,
 * -2 for an unterminated quote. *line advances over the lines consumed. */
static int csv_record(const char *text, size_t len, size_t *pos, char *buf, char **fields, int maxf,
                      int *line)
{
    size_t p = *pos;
    if (p >= len)
        return -1;
    int nf = 0;
    char *w = buf;
    bool blank = true;
    for (;;) {
        /* one field */
        char *start = w;
        bool quoted = false;
        while (p < len && (text[p] == ' ' || text[p] == '\t'))
            p++;
        if (p < len && text[p] == '"') {
            quoted = true;
            blank = false;
            p++;
            for (;;) {
                if (p >= len)
                    return -2;
                if (text[p] == '"') {
                    if (p + 1 < len && text[p + 1] == '"') {
                        *w++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                if (text[p] == '\n')
                    (*line)++;
                *w++ = text[p++];
            }
            while (p < len && text[p] != ',' && text[p] != '\n')
                p++; /* text after the closing quote is ignored */
        } else {
            while (p < len && text[p] != ',' && text[p] != '\n')
                *w++ = text[p++];
        }
        if (!quoted) {
            while (w > start && (w[-1] == ' ' || w[-1] == '\t' || w[-1] == '\r'))
                w--;
            if (w > start)
                blank = false;
        }
        *w++ = '\0';
        if (nf < maxf)
            fields[nf++] = start;
        if (p < len && text[p] == ',') {
            p++;
            blank = false;
            continue;
        }
        break;
    }
    if (p < len && text[p] == '\n')
        p++;
    (*line)++;
    *pos = p;
    return blank ? 0 : nf;
}

static bool header_word(const char *s)
{
    static const char *const words[] = {"path",  "file",       "filename", "file_name",
                                        "image", "image_path", "name"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcasecmp(s, words[i]) == 0)
            return true;
    return false;
}

/* The file a manifest row names, as a path to open (malloc'd, in *full), or
 * a skip reason in `why`. Unless outside files are allowed, the row must
 * stay inside the manifest's folder `dir` (whose real path is `real_dir`):
 * relative, without a ".." component, and where its symbolic links lead
 * too; the path returned is then the resolved one, so that what was checked
 * is what is opened. */
static enum cxr_status manifest_row_path(const struct ds_loader *L, const char *dir,
                                         const char *real_dir, const char *row, char **full,
                                         char *why, size_t whycap)
{
    *full = NULL;
    if (ds_allow_outside(L)) {
        if (row[0] == '/' ? !(*full = strdup(row)) : asprintf(full, "%s/%s", dir, row) < 0)
            return CXR_ERR_NOMEM;
        return CXR_OK;
    }
    char *rel = strdup(row);
    if (!rel)
        return CXR_ERR_NOMEM;
    bool safe = rel[0] != '/' && ds_normalize_entry_name(rel) && rel[0];
    free(rel);
    if (!safe) {
        snprintf(why, whycap,
                 "path refused: a manifest row must name a file inside the manifest's folder "
                 "(relative, without '..'; --allow-outside lifts this)");
        return CXR_ERR_TRIAGE_ARCHIVE;
    }
    char *joined = NULL;
    if (asprintf(&joined, "%s/%s", dir, row) < 0)
        return CXR_ERR_NOMEM;
    char *real = realpath(joined, NULL);
    if (!real) {
        snprintf(why, whycap, "cannot open: %s", strerror(errno));
        free(joined);
        return CXR_ERR_IO;
    }
    free(joined);
    size_t k = strlen(real_dir);
    bool inside =
        strncmp(real, real_dir, k) == 0 && (real[k] == '/' || (k == 1 && real_dir[0] == '/'));
    if (!inside) {
        free(real);
        snprintf(why, whycap,
                 "path refused: a symbolic link leads outside the manifest's folder "
                 "(--allow-outside lifts this)");
        return CXR_ERR_TRIAGE_ARCHIVE;
    }
    *full = real;
    return CXR_OK;
}

enum cxr_status ds_read_manifest(struct ds_loader *L, const char *path, char *err)
{
    uint8_t *text = NULL;
    size_t len = 0;
    char why[512];
    enum cxr_status st = read_file(path, MAX_MANIFEST_BYTES, &text, &len, why, sizeof why);
    if (st != CXR_OK)
        return cxr_seterr(err, CXR_ERR_TRIAGE_ARCHIVE, "%s: %s", path, why);
    char *dir = strdup(path), *real_dir = NULL;
    char *buf = malloc(len + 1);
    if (!dir || !buf) {
        st = cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
        goto done;
    }
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir ? 1 : 0] = '\0';
    else
        strcpy(dir, ".");
    if (!(real_dir = realpath(dir, NULL))) {
        st = cxr_seterr(err, CXR_ERR_TRIAGE_ARCHIVE, "%s: cannot resolve its folder %s: %s", path,
                        dir, strerror(errno));
        goto done;
    }

    size_t pos = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3; /* UTF-8 byte order mark */
    int line = 1;
    bool first = true;
    for (;;) {
        char *f[4];
        int at = line;
        int nf = csv_record((const char *)text, len, &pos, buf, f, 4, &line);
        if (nf == -1)
            break;
        char where[64];
        snprintf(where, sizeof where, "manifest line %d", at);
        if (nf == -2) {
            st = ds_skip(L, where, CXR_ERR_TRIAGE_ARCHIVE, "unterminated quoted field");
            break;
        }
        if (nf == 0)
            continue;
        int32_t label = nf >= 2 ? ds_label_from_text(L, f[1]) : -1;
        if (first && label < 0 && header_word(f[0])) {
            first = false;
            continue; /* the header row */
        }
        first = false;
        if (nf < 2 || !f[0][0]) {
            st = ds_skip(L, where, CXR_ERR_TRIAGE_ARCHIVE, "expected path,label[,patient_id]");
        } else if (label < 0) {
            st = ds_skip(L, f[0], CXR_ERR_TRIAGE_ARCHIVE,
                         "%s: unknown label '%.64s' (expected one of %s)", where, f[1],
                         ds_class_list(L));
        } else {
            char *full = NULL;
            enum cxr_status rs = manifest_row_path(L, dir, real_dir, f[0], &full, why, sizeof why);
            if (rs == CXR_ERR_NOMEM) {
                st = cxr_seterr(err, CXR_ERR_NOMEM, "out of memory");
                goto done;
            }
            uint8_t *data = NULL;
            size_t dlen = 0;
            if (rs == CXR_OK)
                rs = read_file(full, ds_max_entry_bytes(L), &data, &dlen, why, sizeof why);
            free(full);
            if (rs != CXR_OK)
                st = ds_skip(L, f[0], rs, "%s: %s", where, why);
            else
                st = ds_submit(L, f[0], data, dlen, label, nf >= 3 && f[2][0] ? f[2] : NULL);
        }
        if (st != CXR_OK)
            break;
    }
done:
    free(buf);
    free(dir);
    free(real_dir);
    free(text);
    return st;
}
