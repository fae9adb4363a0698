# model.cmake: add a folder written by `export-model -o DIR` to a CMake target.
#
# Copy this file into your project, then:
#
#     include(cmake/model.cmake)
#     k2m_add_model(my_firmware ${CMAKE_CURRENT_SOURCE_DIR}/model)
#
# and in your code:  #include "<prefix>.h"  ...  <prefix>_predict(in, out);
#
# It adds every .c of the folder (PREFIX.c and k2m_runtime/*.c) to the target,
# the folder as an include directory (the folder's own includes are relative
# to it), and libm (used by float32 models only; harmless for int8).  Your
# target keeps its own CPU flags, e.g. for a Cortex-M4F:
#     -mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard
# The exported code is C99 and builds warning-free with -Wall -Wextra -Werror.
#
# Re-run CMake after re-exporting a model whose layers changed: the list of
# kernel files is taken when CMake configures (CONFIGURE_DEPENDS asks the
# generators that support it to re-check on every build).

function(k2m_add_model target model_dir)
    get_filename_component(_k2m_dir "${model_dir}" ABSOLUTE)
    if(NOT EXISTS "${_k2m_dir}")
        message(FATAL_ERROR "k2m_add_model: '${_k2m_dir}' does not exist; run export-model -o first")
    endif()
    file(GLOB_RECURSE _k2m_sources CONFIGURE_DEPENDS "${_k2m_dir}/*.c")
    if(NOT _k2m_sources)
        message(FATAL_ERROR "k2m_add_model: '${_k2m_dir}' holds no .c files; not an exported model folder")
    endif()
    target_sources(${target} PRIVATE ${_k2m_sources})
    target_include_directories(${target} PRIVATE "${_k2m_dir}")
    target_link_libraries(${target} PRIVATE m)
endfunction()
