# Finds nifticlib (Debian libnifti2-dev) and defines the imported targets NIFTI::nifti2 and
# NIFTI::znz. Debian 12's own NIFTIConfig.cmake (libnifti2-dev 3.0.1-9) points its imported
# libraries at /usr/lib instead of the multiarch folder and names tools that are not
# installed, so find_package(NIFTI) in config mode fails; med3d puts this module first.
find_path(NIFTI_INCLUDE_DIR nifti2_io.h PATH_SUFFIXES nifti)
find_library(NIFTI_NIFTI2_LIBRARY nifti2)
find_library(NIFTI_ZNZ_LIBRARY znz)
find_package(ZLIB QUIET)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NIFTI
  REQUIRED_VARS NIFTI_NIFTI2_LIBRARY NIFTI_ZNZ_LIBRARY NIFTI_INCLUDE_DIR ZLIB_FOUND)
if(NIFTI_FOUND AND NOT TARGET NIFTI::nifti2)
  add_library(NIFTI::znz UNKNOWN IMPORTED)
  set_target_properties(NIFTI::znz PROPERTIES
    IMPORTED_LOCATION "${NIFTI_ZNZ_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${NIFTI_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES ZLIB::ZLIB)
  add_library(NIFTI::nifti2 UNKNOWN IMPORTED)
  set_target_properties(NIFTI::nifti2 PROPERTIES
    IMPORTED_LOCATION "${NIFTI_NIFTI2_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${NIFTI_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "NIFTI::znz;m")
endif()
mark_as_advanced(NIFTI_INCLUDE_DIR NIFTI_NIFTI2_LIBRARY NIFTI_ZNZ_LIBRARY)
