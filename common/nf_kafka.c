/* placeholder: being written */
#include "nf_kafka.h"
