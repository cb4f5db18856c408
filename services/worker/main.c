/*
 * nf-worker: runs the descriptor wk_service (service.c) under nf_svc_main. Everything else
 * lives in wk_core (see wk.h for the map).
 */
#include "nf_svc.h"
#include "wk.h"

int main(int argc, char **argv)
{
    return nf_svc_main(&wk_service, argc, argv);
}
