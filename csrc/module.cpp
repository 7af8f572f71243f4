// The Python module actrack_fast._C: importing it loads the shared library, whose static initialisers register
// the ops with the dispatcher. It holds no functions; `with_cuda` says whether the CUDA kernels were compiled.
#include <Python.h>

#ifdef WITH_CUDA
static constexpr long kWithCuda = 1;
#else
static constexpr long kWithCuda = 0;
#endif

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module != nullptr && PyModule_AddIntConstant(module, "with_cuda", kWithCuda) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
