global-incdirs-y += . ../common
srcs-y += fault_ta.c
srcs-y += ../common/ebcc_ta.c
