# BNORM_BLAS picks the CBLAS library behind src/kernels/gemm.cpp and maps it onto FindBLAS's
# BLA_VENDOR. Every choice runs BLAS on one thread, so results do not depend on --threads
# (see src/kernels/gemm.cpp and docs/architecture.md).
#   OpenBLAS  BLA_VENDOR=OpenBLAS          pinned with openblas_set_num_threads(1)
#   MKL       BLA_VENDOR=Intel10_64lp_seq  the sequential MKL: one thread by construction
#   BLIS      BLA_VENDOR=FLAME             pinned with bli_thread_set_num_threads(1)
#   Generic   BLA_VENDOR unset (All) or    whatever FindBLAS finds first; pinned when it is one of
#             -DBLA_VENDOR=<any>           the above (weak symbols), otherwise the library's own
#                                          setting applies (e.g. OMP_NUM_THREADS=1)
set(_bnorm_blas_hint_dirs "")
# A different choice in an existing build directory must search for its header again.
if(DEFINED BNORM_BLAS_CONFIGURED AND NOT BNORM_BLAS_CONFIGURED STREQUAL BNORM_BLAS)
  unset(BNORM_CBLAS_INCLUDE_DIR CACHE)
endif()
set(BNORM_BLAS_CONFIGURED ${BNORM_BLAS} CACHE INTERNAL "BNORM_BLAS of the last configure")

if(BNORM_BLAS STREQUAL "OpenBLAS")
  set(BNORM_BLA_VENDOR OpenBLAS)
  set(_bnorm_blas_header openblas_config.h)  # marks OpenBLAS's include dir (holds its cblas.h)
  set(_bnorm_blas_suffixes openblas openblas-pthread openblas-openmp openblas-serial)
elseif(BNORM_BLAS STREQUAL "MKL")
  set(BNORM_BLA_VENDOR Intel10_64lp_seq)
  set(_bnorm_blas_header mkl_cblas.h)
  set(_bnorm_blas_suffixes mkl)
  if(DEFINED ENV{MKLROOT})
    list(APPEND _bnorm_blas_hint_dirs $ENV{MKLROOT}/include)
  endif()
elseif(BNORM_BLAS STREQUAL "BLIS")
  set(BNORM_BLA_VENDOR FLAME)
  set(_bnorm_blas_header blis.h)  # BLIS's include dir also holds its cblas.h
  set(_bnorm_blas_suffixes blis blis-openmp blis-pthread blis-serial)
elseif(BNORM_BLAS STREQUAL "Generic")
  set(BNORM_BLA_VENDOR "")
  set(_bnorm_blas_header cblas.h)
  set(_bnorm_blas_suffixes "")
else()
  message(FATAL_ERROR "BNORM_BLAS='${BNORM_BLAS}' is not one of: OpenBLAS, MKL, BLIS, Generic")
endif()

if(BNORM_BLA_VENDOR STREQUAL "")
  # Generic: FindBLAS's own search order, or the vendor given with -DBLA_VENDOR=... (e.g.
  # Generic for the reference BLAS, ATLAS, Apple, NVHPC).
  if(NOT DEFINED CACHE{BLA_VENDOR})
    unset(BLA_VENDOR)
  endif()
else()
  set(BLA_VENDOR ${BNORM_BLA_VENDOR})
endif()
find_package(BLAS REQUIRED)
find_path(BNORM_CBLAS_INCLUDE_DIR NAMES ${_bnorm_blas_header} HINTS ${_bnorm_blas_hint_dirs}
          PATH_SUFFIXES ${_bnorm_blas_suffixes}
          DOC "Directory with the CBLAS header of BNORM_BLAS=${BNORM_BLAS}")
if(NOT BNORM_CBLAS_INCLUDE_DIR)
  message(FATAL_ERROR "BNORM_BLAS=${BNORM_BLAS}: found the library (${BLAS_LIBRARIES}) but not "
                      "its header ${_bnorm_blas_header}; set BNORM_CBLAS_INCLUDE_DIR")
endif()
message(STATUS "bnorm BLAS: ${BNORM_BLAS} (${BLAS_LIBRARIES}; headers ${BNORM_CBLAS_INCLUDE_DIR})")
