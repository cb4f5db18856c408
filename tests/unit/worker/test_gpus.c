/*
 * gpus.c: GPU type names from nvidia-smi's product names, its CSV parsed, the device list
 * (the agent's own CUDA_VISIBLE_DEVICES honoured), and each job pinned to free devices
 * first, sharing only when there are more GPU jobs than GPUs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "nf_test.h"
#include "wk.h"

static void test_type_names(void **state)
{
    char t[32];
    wk_gpu_type_of("NVIDIA H100 80GB HBM3", t, sizeof(t));
    assert_string_equal(t, "h100");
    wk_gpu_type_of("NVIDIA A100-SXM4-40GB", t, sizeof(t));
    assert_string_equal(t, "a100");
    wk_gpu_type_of("NVIDIA L4", t, sizeof(t));
    assert_string_equal(t, "l4");
    wk_gpu_type_of("Tesla T4", t, sizeof(t));
    assert_string_equal(t, "t4");
    wk_gpu_type_of("NVIDIA H200 141GB HBM3e", t, sizeof(t));
    assert_string_equal(t, "h200");
    wk_gpu_type_of("NVIDIA GeForce", t, sizeof(t));
    assert_string_equal(t, "");
}

static void test_smi_output(void **state)
{
    char t[32];
    int n = -1;
    long long mib = -1;
    assert_int_equal(wk_gpus_parse_smi("NVIDIA H100 80GB HBM3, 81559\nNVIDIA H100 80GB HBM3, "
                                       "81559\n",
                                       t, sizeof(t), &n, &mib),
                     0);
    assert_string_equal(t, "h100");
    assert_int_equal(n, 2);
    assert_int_equal(mib, 81559);
    assert_int_equal(wk_gpus_parse_smi("", t, sizeof(t), &n, &mib), -1);
    assert_int_equal(n, 0);
    assert_int_equal(wk_gpus_parse_smi("No devices were found\n", t, sizeof(t), &n, &mib), -1);
}

static void test_devices(void **state)
{
    int ids[64];
    assert_int_equal(wk_gpus_devices(NULL, 4, ids, 64), 4);
    assert_int_equal(ids[3], 3);
    assert_int_equal(wk_gpus_devices("", 2, ids, 64), 2);
    assert_int_equal(wk_gpus_devices("2,5", 8, ids, 64), 2); /* the agent's own pinning */
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 5);
    assert_int_equal(wk_gpus_devices("GPU-8f2c1e44-aaaa", 1, ids, 64), -1);
    assert_int_equal(wk_gpus_devices("1,x", 1, ids, 64), -1);
    assert_int_equal(wk_gpus_devices(NULL, 0, ids, 64), 0);
}

static void test_pick(void **state)
{
    int dev[4] = {0, 1, 2, 3};
    char out[64];
    uint64_t a = wk_gpus_pick(0, dev, 4, 2, out, sizeof(out));
    assert_int_equal(a, 0x3);
    assert_string_equal(out, "0,1");
    uint64_t b = wk_gpus_pick(a, dev, 4, 1, out, sizeof(out));
    assert_int_equal(b, 0x4);
    assert_string_equal(out, "2");
    /* 3 wanted, 1 free: the free one, then the lowest busy ones (shared) */
    uint64_t c = wk_gpus_pick(a | b, dev, 4, 3, out, sizeof(out));
    assert_int_equal(c, 0xB);
    assert_string_equal(out, "0,1,3");
    assert_int_equal(wk_gpus_pick(0, dev, 4, 0, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    int pinned[2] = {6, 7};
    assert_int_equal(wk_gpus_pick(0x1, pinned, 2, 1, out, sizeof(out)), 0x2);
    assert_string_equal(out, "7");
    assert_int_equal(wk_gpus_pick(0, pinned, 2, 8, out, sizeof(out)), 0x3); /* at most all */
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_type_names, test_smi_output, test_devices, test_pick);
}
