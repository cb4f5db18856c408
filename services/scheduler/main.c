/*
 * nf-scheduler: schedules jobs and tracks their state. The service is the descriptor
 * sched_service (service.c); nf_svc_main runs it.
 */
#include "nf_svc.h"
#include "sched.h"

int main(int argc, char **argv)
{
    return nf_svc_main(&sched_service, argc, argv);
}
