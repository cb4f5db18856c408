/*
 * nf-gateway: the public API gateway, run by nf_svc from its descriptor (service.c; the
 * file map is at the top of gw.h).
 */
#include "gw.h"
#include "nf_svc.h"

int main(int argc, char **argv)
{
    return nf_svc_main(&gw_service, argc, argv);
}
