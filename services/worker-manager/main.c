/*
 * nf-worker-manager: leases queued jobs to worker agents. The service is the descriptor
 * wm_service (service.c); nf_svc_main runs it.
 */
#include "nf_svc.h"
#include "wm.h"

int main(int argc, char **argv)
{
    return nf_svc_main(&wm_service, argc, argv);
}
