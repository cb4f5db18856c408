#pragma once
/*
 * nf_cfg: a service's configuration is one table of options read once at start from the
 * environment into the service's config struct (Redis config.c style).
 *
 *   struct gw_config { char *addr; int max_body; bool debug; char *reg_token; };
 *   static const struct nf_cfg_opt gw_opts[] = {
 *       {"NF_GATEWAY_ADDR", NF_CFG_STR, "127.0.0.1:8000", 0, 0, false,
 *        offsetof(struct gw_config, addr), "public listen address host:port"},
 *       {"NF_GATEWAY_MAX_BODY", NF_CFG_INT, "1048576", 1024, 67108864, false,
 *        offsetof(struct gw_config, max_body), "largest request body in bytes"},
 *   };
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum nf_cfg_type {
    NF_CFG_STR,   /* char * field, heap copy owned by the struct (nf_cfg_free) */
    NF_CFG_INT,   /* int field, checked against [min, max] */
    NF_CFG_BOOL,  /* bool field: 1/0, true/false, yes/no, on/off */
    NF_CFG_ADDR,  /* char * field holding "host:port" (or "[v6]:port"), checked here once */
    NF_CFG_LEVEL, /* int field: a log level (enum nf_log_level) from debug/info/warn/error */
    NF_CFG_I64,   /* long long field (byte sizes past 2 GiB), checked against [min, max] */
    NF_CFG_ADDRS, /* char * field: one or more host:port, comma-separated (a service's
                     replicas), each checked; at most NF_CFG_MAX_ADDRS */
};

#define NF_CFG_MAX_ADDRS 16

struct nf_cfg_opt {
    const char *env; /* environment variable name, NF_<SVC>_<NAME> */
    enum nf_cfg_type type;
    const char *def;    /* default as text; NULL means the variable is required */
    long long min, max; /* bounds for NF_CFG_INT and NF_CFG_I64 (inclusive; min == max == 0
                           means any value of the field's type); for NF_CFG_STR min is the minimum
                           length (0 = may be empty) and max, when > 0, the maximum length */
    bool secret;        /* masked as "***" when logged */
    size_t offset;      /* offsetof() the field in the config struct */
    const char *help;
};

/*
 * Fills `cfg` from the environment. On a missing required value, a non-number, a value
 * out of bounds or a bad bool, writes "NF_X: must be between 1 and 65535 (got 0)" style
 * text into err and returns -1; fields already set are freed by nf_cfg_free.
 */
int nf_cfg_load(const struct nf_cfg_opt *opts, size_t n, void *cfg, char *err, size_t errlen);
/* One option table and the struct it was loaded into (a service has two: the shared rows
 * and its own). */
struct nf_cfg_table {
    const struct nf_cfg_opt *opts;
    size_t n;
    const void *cfg;
};

/* Logs the effective configuration of all tables as one `config` line, secrets masked. */
void nf_cfg_log(const struct nf_cfg_table *t, size_t ntables);
/* Frees the NF_CFG_STR, NF_CFG_ADDR and NF_CFG_ADDRS fields; accepts a half-loaded struct (NULL
 * fields). */
void nf_cfg_free(const struct nf_cfg_opt *opts, size_t n, void *cfg);
/* Prints the tables' rows (env, type, default, bounds, help) under one heading, for --help;
 * t[i].cfg is not used. */
void nf_cfg_usage(const struct nf_cfg_table *t, size_t ntables, FILE *out);
/* Splits "host:port,host:port" (spaces around the commas allowed) into up to max
 * "host:port" heap copies in addrs; the count, or -1 if empty, malformed or too many. */
int nf_cfg_split_addrs(const char *list, char **addrs, int max);
/* Splits "host:port" into host (heap copy) and port; -1 if malformed. */
int nf_cfg_split_addr(const char *addr, char **host, int *port);
