# oneDNN (Debian's libdnnl-dev): bnorm's fast convolution (src/kernels/conv2d_fast.cpp) and a peer
# of `bnorm bench`. Sets BNORM_HAVE_ONEDNN, BNORM_DNNL_INCLUDE_DIR and BNORM_DNNL_LIBRARY.
#
# Debian's CMake package for it requires the OpenCL development files (the library is built with
# the OpenCL GPU runtime, which it loads itself at run time) and fails configuration without
# them, so the header and library are found directly. Without oneDNN bnorm still builds: the
# convolutions run on the im2col + BLAS path.
option(BNORM_WITH_ONEDNN "Use oneDNN's convolution primitives when libdnnl is found" ON)
set(BNORM_HAVE_ONEDNN OFF)
if(BNORM_WITH_ONEDNN)
  find_path(BNORM_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.hpp)
  find_library(BNORM_DNNL_LIBRARY dnnl)
  if(BNORM_DNNL_INCLUDE_DIR AND BNORM_DNNL_LIBRARY)
    set(BNORM_HAVE_ONEDNN ON)
    message(STATUS "bnorm: oneDNN found at ${BNORM_DNNL_LIBRARY} (fast convolutions)")
  else()
    message(WARNING "bnorm: oneDNN not found (apt-get install libdnnl-dev): convolutions use "
                    "the im2col + BLAS path")
  endif()
endif()
