/*
 * An uploaded model (POST /api/models): the whole object as the input, walked the way
 * routes_models.c walks it in the store - tar headers (pax and GNU long names), members
 * judged, config.json, each safetensors length and header, the index, the verdict - with
 * the same bounds. Invariants: every kept file lies inside the object; an accepted
 * directory has a config, weights and parameters.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "model_check.h"

static int walk(const uint8_t *data, size_t size, struct gw_mc *mc, char *err, size_t errlen)
{
    struct gw_mc_tar_hdr h;
    char pending[GW_MC_NAME_MAX * 2 + 2] = "", name[GW_MC_NAME_MAX + 1];
    uint64_t off = 0, dat;
    size_t members = 0;
    int rc;

    while (size >= 512 && off <= size - 512) {
        if (++members > GW_MC_MAX_MEMBERS)
            return -1;
        rc = gw_mc_tar_header(data + off, &h, err, errlen);
        if (rc <= 0)
            return rc;
        dat = off + 512;
        if (h.size > size - dat)
            return -1;
        if (h.type == 'x' || h.type == 'L') {
            if (h.size == 0 || h.size > (h.type == 'x' ? GW_MC_PAX_MAX : sizeof(pending) - 1))
                return -1;
            if (h.type == 'x') {
                if (gw_mc_pax_path((const char *)data + dat, (size_t)h.size, pending,
                                   sizeof(pending), err, errlen) < 0)
                    return -1;
            } else {
                char *s = fuzz_strndup(data + dat, (size_t)h.size);
                memcpy(pending, s, strlen(s) + 1);
                free(s);
            }
        } else {
            rc = gw_mc_member(pending[0] ? pending : h.name, h.type, name, sizeof(name), err,
                              errlen);
            if (h.type != 'g' && h.type != 'K')
                pending[0] = '\0';
            if (rc < 0 || (rc == 1 && gw_mc_add(mc, name, dat, h.size, err, errlen) < 0))
                return -1;
        }
        off = dat + ((h.size + 511) / 512) * 512;
    }
    return size >= 512 ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct gw_mc mc;
    char err[512];
    const struct gw_mc_file *f;
    uint64_t hl;
    size_t i;

    gw_mc_init(&mc);
    if (walk(data, size, &mc, err, sizeof(err)) < 0)
        return 0;
    for (i = 0; i < mc.nfiles; i++)
        if (mc.files[i].offset > size || mc.files[i].size > size - mc.files[i].offset)
            abort(); /* a kept file outside the object */
    if ((f = gw_mc_find(&mc, "config.json")) && f->size > 0 && f->size <= GW_MC_CONFIG_MAX) {
        char *s = fuzz_strndup(data + f->offset, (size_t)f->size);
        int rc = gw_mc_config(&mc, s, (size_t)f->size, err, sizeof(err));
        free(s);
        if (rc < 0)
            return 0;
    }
    for (i = 0; i < mc.nfiles; i++) {
        f = &mc.files[i];
        if (!gw_mc_is_safetensors(f->name) || f->size < 10)
            continue;
        if (gw_mc_st_header_len(f->name, data + f->offset, f->size, &hl, err, sizeof(err)) < 0)
            return 0;
        char *s = fuzz_strndup(data + f->offset + 8, (size_t)hl);
        int rc = gw_mc_safetensors(&mc, f->name, s, (size_t)hl, f->size - 8 - hl, err, sizeof(err));
        free(s);
        if (rc < 0)
            return 0;
    }
    if ((f = gw_mc_find(&mc, "model.safetensors.index.json")) && f->size > 0 &&
        f->size <= GW_MC_INDEX_MAX) {
        char *s = fuzz_strndup(data + f->offset, (size_t)f->size);
        int rc = gw_mc_index(&mc, s, (size_t)f->size, err, sizeof(err));
        free(s);
        if (rc < 0)
            return 0;
    }
    if (gw_mc_finish(&mc, err, sizeof(err)) == 0 &&
        (!mc.config || mc.params == 0 || mc.st_files == 0))
        abort(); /* accepted without config, weights or parameters */
    return 0;
}
