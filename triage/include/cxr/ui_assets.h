/* ui_assets.h — the reading worklist page (triage/ui: index.html, app.js,
 * style.css), embedded at build time (triage/embed.cmake), served by the node
 * at /ui/ and by the Orthanc plugin at /cxr-triage/ui/. The page reads
 * ../worklist and ../status relative to itself. */
#ifndef CXR_UI_ASSETS_H
#define CXR_UI_ASSETS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cxr_ui_asset {
    const char *name; /* "index.html" */
    const char *mime;
    const unsigned char *data; /* size bytes, plus a terminating 0 not counted */
    size_t size;
};
extern const struct cxr_ui_asset cxr_ui_assets[];
extern const size_t cxr_ui_asset_count;

/* The file called name ("" or NULL: index.html), or NULL. */
const struct cxr_ui_asset *cxr_ui_asset_find(const char *name);

#ifdef __cplusplus
}
#endif

#endif
