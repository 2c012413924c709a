/* ui_assets.c — lookup in the embedded worklist page (cxr/ui_assets.h). */
#include "cxr/ui_assets.h"

#include <string.h>

const struct cxr_ui_asset *cxr_ui_asset_find(const char *name)
{
    if (!name || !*name)
        name = "index.html";
    for (size_t i = 0; i < cxr_ui_asset_count; i++)
        if (!strcmp(cxr_ui_assets[i].name, name))
            return &cxr_ui_assets[i];
    return NULL;
}
