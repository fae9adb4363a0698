# model.cmake: add folders written by `export-model -o DIR` to a CMake target.
#
# Copy this file into your project, then, once per model:
#
#     include(cmake/model.cmake)
#     k2m_add_model(my_firmware ${CMAKE_CURRENT_SOURCE_DIR}/model_wake)
#     k2m_add_model(my_firmware ${CMAKE_CURRENT_SOURCE_DIR}/model_cmd)
#
# and in your code:  #include "<prefix>.h"  ...  <prefix>_predict(in, out);
#
# It adds the folder's PREFIX.c, its runtime files (k2m_runtime/*.c), the
# folder as an include directory (the folder's own includes are relative to
# it), and libm (used by float32 models only; harmless for int8).  Several
# models share one runtime: each runtime file is added once per target, and
# a copy that differs from the one already added (a folder exported by
# another version of export-model) is an error.  Give every model its own
# --name.  Your target keeps its own CPU flags, e.g. for a Cortex-M4F:
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
    file(GLOB _k2m_model CONFIGURE_DEPENDS "${_k2m_dir}/*.c")
    if(NOT _k2m_model)
        message(FATAL_ERROR "k2m_add_model: '${_k2m_dir}' holds no .c files; not an exported model folder")
    endif()
    target_sources(${target} PRIVATE ${_k2m_model})
    file(GLOB _k2m_runtime CONFIGURE_DEPENDS "${_k2m_dir}/k2m_runtime/*")
    foreach(_k2m_file ${_k2m_runtime})
        get_filename_component(_k2m_name "${_k2m_file}" NAME)
        get_property(_k2m_first GLOBAL PROPERTY "K2M_RUNTIME_${target}_${_k2m_name}")
        if(_k2m_first)
            file(SHA256 "${_k2m_first}" _k2m_a)
            file(SHA256 "${_k2m_file}" _k2m_b)
            if(NOT _k2m_a STREQUAL _k2m_b)
                message(FATAL_ERROR "k2m_add_model: ${_k2m_file} differs from ${_k2m_first}: the "
                        "folders come from different versions of export-model; export them again with one")
            endif()
        else()
            set_property(GLOBAL PROPERTY "K2M_RUNTIME_${target}_${_k2m_name}" "${_k2m_file}")
            if(_k2m_name MATCHES "\\.c$")
                target_sources(${target} PRIVATE "${_k2m_file}")
            endif()
        endif()
    endforeach()
    target_include_directories(${target} PRIVATE "${_k2m_dir}")
    target_link_libraries(${target} PRIVATE m)
endfunction()
