/*
 * inputs.c's plan (pure): which params of a validated request name stored data.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers it needs */

#include <string.h>

#include "gw.h"
#include "nf_test.h"

#define ART "artifact://art_01ARYZ6S41041061050R3GG28A"

static void test_plan(void **state)
{
    struct gw_input in[8];
    cJSON *p = cJSON_Parse("{\"dataset_uri\":\"s3://bucket/dir/train.parquet\","
                           "\"model_id\":\"" ART "\",\"epochs\":3}");
    size_t n = gw_inputs_plan(p, in, 8);

    assert_int_equal(n, 2);
    assert_string_equal(in[0].param, "dataset_uri");
    assert_string_equal(in[0].uri, "s3://bucket/dir/train.parquet");
    assert_null(in[0].artifact_id);
    assert_string_equal(in[1].param, "model_id");
    assert_string_equal(in[1].artifact_id, "art_01ARYZ6S41041061050R3GG28A");
    assert_string_equal(gw_input_basename("tenants/u/files/art_1/train.parquet"), "train.parquet");
    assert_string_equal(gw_input_basename("plain"), "plain");
    cJSON_Delete(p);

    /* a model name is looked up in the catalogue; the data first; max bounds the plan */
    p = cJSON_Parse("{\"teacher_model\":\"gpt-4\",\"student_model\":\"" ART "\","
                    "\"dataset_uri\":\"" ART "\"}");
    assert_int_equal(gw_inputs_plan(p, in, 8), 3);
    assert_string_equal(in[0].param, "dataset_uri");
    assert_int_equal(in[0].kind, GW_INPUT_ARTIFACT);
    assert_string_equal(in[1].param, "teacher_model");
    assert_int_equal(in[1].kind, GW_INPUT_MODEL);
    assert_string_equal(in[1].uri, "gpt-4");
    assert_null(in[1].artifact_id);
    assert_string_equal(in[2].param, "student_model");
    assert_int_equal(in[2].kind, GW_INPUT_ARTIFACT);
    assert_int_equal(gw_inputs_plan(p, in, 1), 1);
    cJSON_Delete(p);

    /* a train's output_model must be free: checked after the inputs */
    p = cJSON_Parse("{\"model_id\":\"llama-3-8b\",\"dataset_uri\":\"s3://b/k\","
                    "\"output_model\":\"mine\"}");
    assert_int_equal(gw_inputs_plan(p, in, 8), 3);
    assert_int_equal(in[0].kind, GW_INPUT_OBJECT);
    assert_int_equal(in[1].kind, GW_INPUT_MODEL);
    assert_string_equal(in[2].param, "output_model");
    assert_int_equal(in[2].kind, GW_INPUT_NEW_MODEL);
    assert_string_equal(in[2].uri, "mine");
    cJSON_Delete(p);
    /* a train's from_checkpoint is an artifact input (its kind is checked on resolve) */
    p = cJSON_Parse("{\"model_id\":\"llama-3-8b\",\"dataset_uri\":\"s3://b/k\","
                    "\"from_checkpoint\":\"" ART "\"}");
    assert_int_equal(gw_inputs_plan(p, in, 8), 3);
    assert_string_equal(in[2].param, "from_checkpoint");
    assert_int_equal(in[2].kind, GW_INPUT_ARTIFACT);
    assert_string_equal(in[2].artifact_id, "art_01ARYZ6S41041061050R3GG28A");
    cJSON_Delete(p);
    /* evaluate's compare_to: a second model, resolved like model_id, after it */
    p = cJSON_Parse("{\"compare_to\":\"llama-3-8b\",\"model_id\":\"" ART "\"}");
    assert_int_equal(gw_inputs_plan(p, in, 8), 2);
    assert_string_equal(in[0].param, "model_id");
    assert_string_equal(in[1].param, "compare_to");
    assert_int_equal(in[1].kind, GW_INPUT_MODEL);
    cJSON_Delete(p);
    /* a deployment of the caller as generator or teacher (a provider); generate's
     * templates are no model; a dep- model_id is a model name like any other */
    p = cJSON_Parse("{\"teacher_model\":\"dep-0123456789ab\",\"generator\":\"template\","
                    "\"model_id\":\"dep-0123456789ab\"}");
    assert_int_equal(gw_inputs_plan(p, in, 8), 2);
    assert_string_equal(in[0].param, "model_id");
    assert_int_equal(in[0].kind, GW_INPUT_MODEL);
    assert_string_equal(in[1].param, "teacher_model");
    assert_int_equal(in[1].kind, GW_INPUT_DEPLOYMENT);
    cJSON_Delete(p);
    p = cJSON_Parse("{\"generator\":\"dep-0123456789ab\"}");
    assert_int_equal(gw_inputs_plan(p, in, 8), 1);
    assert_int_equal(in[0].kind, GW_INPUT_DEPLOYMENT);
    cJSON_Delete(p);
    /* evaluate scores a running deployment: its model_id and compare_to may be dep-...;
     * for the other types a dep- model_id stays a model name */
    p = cJSON_Parse("{\"model_id\":\"dep-0123456789ab\",\"compare_to\":\"dep-ba9876543210\"}");
    assert_int_equal(gw_inputs_plan_job("evaluate", p, in, 8), 2);
    assert_int_equal(in[0].kind, GW_INPUT_DEPLOYMENT);
    assert_int_equal(in[1].kind, GW_INPUT_DEPLOYMENT);
    assert_string_equal(in[1].uri, "dep-ba9876543210");
    assert_int_equal(gw_inputs_plan_job("deploy", p, in, 8), 2);
    assert_int_equal(in[0].kind, GW_INPUT_MODEL);
    assert_int_equal(gw_inputs_plan_job("train", p, in, 8), 2);
    assert_int_equal(in[1].kind, GW_INPUT_MODEL);
    cJSON_Delete(p);
    /* audit's tokenizer_model: a model like the others (a name or an artifact) */
    p = cJSON_Parse("{\"dataset_uri\":\"s3://b/k\",\"tokenizer_model\":\"llama-3-8b\"}");
    assert_int_equal(gw_inputs_plan(p, in, 8), 2);
    assert_string_equal(in[1].param, "tokenizer_model");
    assert_int_equal(in[1].kind, GW_INPUT_MODEL);
    cJSON_Delete(p);
    p = cJSON_Parse("{\"domain\":\"law\",\"num_samples\":3}");
    assert_int_equal(gw_inputs_plan(p, in, 8), 0);
    cJSON_Delete(p);
}

int main(void)
{
    return NF_TEST_RUN(NULL, NULL, test_plan);
}
