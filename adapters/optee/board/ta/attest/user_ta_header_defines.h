#ifndef USER_TA_HEADER_DEFINES_H
#define USER_TA_HEADER_DEFINES_H
#include "ebcc_ta.h"
#define TA_UUID EBCC_ATTEST_UUID
/* One instance for all sessions, kept alive, so the key is loaded from secure storage once. */
#define TA_FLAGS (TA_FLAG_SINGLE_INSTANCE | TA_FLAG_MULTI_SESSION | TA_FLAG_INSTANCE_KEEP_ALIVE)
#define TA_STACK_SIZE (4 * 1024)
#define TA_DATA_SIZE (32 * 1024)
#define TA_VERSION "1.0"
#define TA_DESCRIPTION "EBCC attestation TA: signs stage evidence with a key kept in secure storage"
#endif
