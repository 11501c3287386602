global-incdirs-y += . ../common
srcs-y += order_signer_ta.c
srcs-y += ../common/ebcc_ta.c
