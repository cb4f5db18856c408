#pragma once
/*
 * model_check: the structural check of an uploaded Hugging Face model directory before
 * POST /api/models registers it (issue 20). Pure: the caller (routes_models.c) reads the
 * bytes from the object store with ranged GETs and feeds them here; nothing here does I/O.
 *
 * The upload is an uncompressed tar of the directory's files (the platform's model.tar
 * layout: `tar -C DIR -cf model.tar .`). The check, in the order the caller runs it:
 *
 *   tar headers (gw_mc_tar_header, one 512-byte block at a time; pax 'x' and GNU 'L' long
 *   names) --> each member's name (gw_mc_member: "./" dropped; absolute, "..", links,
 *   devices refused; files in subdirectories ignored) --> gw_mc_add (kept: the top-level
 *   files, at most GW_MC_MAX_FILES, none twice)
 *   --> config.json (gw_mc_config: a JSON object with a known causal-LM model_type)
 *   --> each *.safetensors (gw_mc_safetensors: u64 header length, the JSON header: every
 *       tensor's dtype, shape and data_offsets agree with the byte size, the tensors cover
 *       the data exactly, as the safetensors loader requires; parameters summed)
 *   --> model.safetensors.index.json when present (gw_mc_index: the shards it names are
 *       in the tar and hold as many tensors as it maps)
 *   --> gw_mc_finish: tokenizer files present, weights present (pickle-only refused), an
 *       embedding of [vocab_size, hidden_size] when the config gives both.
 *
 * Every function that can fail fills err (a sentence naming the file and what is wrong,
 * for a 422) and returns -1. Every size read from the upload is bounded (GW_MC_*_MAX).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_MC_MAX_FILES 256                            /* top-level files kept */
#define GW_MC_MAX_MEMBERS 4096                         /* tar members walked (all kinds) */
#define GW_MC_NAME_MAX 255                             /* a member's name, bytes */
#define GW_MC_CONFIG_MAX ((size_t)1024 * 1024)         /* config.json */
#define GW_MC_INDEX_MAX ((size_t)16 * 1024 * 1024)     /* model.safetensors.index.json */
#define GW_MC_ST_HEADER_MAX ((size_t)16 * 1024 * 1024) /* one safetensors JSON header */
#define GW_MC_PAX_MAX ((size_t)64 * 1024)              /* a pax extended header */
#define GW_MC_MAX_TENSORS 200000                       /* per safetensors file */
#define GW_MC_TYPE_MAX 48

/* One tar header block, decoded. */
struct gw_mc_tar_hdr {
    char name[GW_MC_NAME_MAX * 2 + 2]; /* ustar prefix "/" name, NUL-terminated */
    uint64_t size;                     /* the member's data bytes */
    char type;                         /* '0' file, '5' dir, 'x'/'g' pax, 'L' GNU long name, ... */
};

/* A kept top-level file: where its data lies in the tar. */
struct gw_mc_file {
    char name[GW_MC_NAME_MAX + 1];
    uint64_t offset; /* of its first data byte in the tar */
    uint64_t size;
};

/* What the check learned; zeroed by gw_mc_init. */
struct gw_mc {
    struct gw_mc_file files[GW_MC_MAX_FILES];
    size_t nfiles;
    /* config.json */
    bool config;
    char model_type[GW_MC_TYPE_MAX];
    int64_t vocab_size;  /* 0: not given */
    int64_t hidden_size; /* hidden_size | n_embd | d_model; 0: not given */
    /* safetensors */
    size_t st_files;    /* checked */
    uint64_t tensors;   /* over all files */
    uint64_t params;    /* the sum of every tensor's element count */
    bool embedding;     /* a 2-D tensor [vocab_size, hidden_size] seen */
    bool index;         /* model.safetensors.index.json checked */
    uint64_t index_map; /* tensors its weight_map names */
};

void gw_mc_init(struct gw_mc *mc);

/*
 * Decodes one 512-byte tar block: 1 a header (h filled), 0 an all-zero block (the end of
 * the archive), -1 not a tar header (bad checksum, bad size field).
 */
int gw_mc_tar_header(const unsigned char *blk, struct gw_mc_tar_hdr *h, char *err, size_t errlen);
/* The path= record of a pax extended header's data: 1 found (path filled), 0 none, -1
 * malformed records. */
int gw_mc_pax_path(const char *data, size_t len, char *path, size_t pathlen, char *err,
                   size_t errlen);
/*
 * A member's name judged: 1 a top-level file (out = its normalized name), 0 to skip (a
 * directory, a file in a subdirectory, pax global headers), -1 refused (an absolute path,
 * a ".." segment, a link, a device, a name with control bytes) with err.
 */
int gw_mc_member(const char *name, char type, char *out, size_t outlen, char *err, size_t errlen);
/* Keeps a top-level file; -1 when given twice or over GW_MC_MAX_FILES. */
int gw_mc_add(struct gw_mc *mc, const char *name, uint64_t offset, uint64_t size, char *err,
              size_t errlen);
/* The kept file of that name, or NULL. */
const struct gw_mc_file *gw_mc_find(const struct gw_mc *mc, const char *name);
/* Whether name ends in .safetensors. */
bool gw_mc_is_safetensors(const char *name);

/* config.json's bytes (len <= GW_MC_CONFIG_MAX). */
int gw_mc_config(struct gw_mc *mc, const char *buf, size_t len, char *err, size_t errlen);
/* A safetensors file's first 8 bytes: its header length, checked against the file size. */
int gw_mc_st_header_len(const char *file, const unsigned char *first8, uint64_t file_size,
                        uint64_t *header_len, char *err, size_t errlen);
/* A safetensors file's JSON header (after the 8 bytes); data_bytes = file size - 8 - len. */
int gw_mc_safetensors(struct gw_mc *mc, const char *file, const char *hdr, size_t len,
                      uint64_t data_bytes, char *err, size_t errlen);
/* model.safetensors.index.json's bytes. */
int gw_mc_index(struct gw_mc *mc, const char *buf, size_t len, char *err, size_t errlen);
/* The checks over the whole directory, once every file above was fed. */
int gw_mc_finish(const struct gw_mc *mc, char *err, size_t errlen);
