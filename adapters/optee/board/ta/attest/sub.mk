global-incdirs-y += . ../common
srcs-y += attest_ta.c
srcs-y += ../common/ebcc_ta.c
