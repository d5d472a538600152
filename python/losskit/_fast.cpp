// losskit._fast: losskit.Loss's per-call path compiled, for the common call
// (a reduced value on one process, CPU tensors in C order). Everything else,
// and every error, stays with the ctypes path in _torch.py, which this only
// shortcuts: a call it cannot take returns None and the Python path runs it
// from the start, raising the runtime's own message where there is one.
//
// Why compiled: on a few dozen elements a loss call is all overhead, and
// the Python of an autograd.Function (forward and backward), the call
// signature's bookkeeping and ctypes cost more than torch's own loss call.
// Here the call's lk_eval_args are built on the stack from the tensors'
// own shapes, the runtime is called through the same lk_loss_eval the
// ctypes path uses (its address is handed over from Python, so the module
// needs no link to liblosskit), and the gradients reach autograd through
// a native node whose backward runs no Python.
#include <torch/extension.h>
#include <torch/csrc/autograd/python_variable.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "losskit/losskit.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using eval_fn = lk_status (*)(const lk_loss *, lk_eval_args *, double *);

constexpr int kMaxTensors = 16;

// A losskit gradient handed to autograd under create_graph: the same values,
// tied to the tensor they are the gradient of, so that differentiating them
// again throws instead of taking them for a constant (which would drop the
// loss's second derivatives without a word).
struct NoSecond : public torch::autograd::Function<NoSecond> {
    static torch::Tensor forward(AutogradContext *, const torch::Tensor &g, const torch::Tensor &)
    {
        return g.view_as(g);
    }

    static variable_list backward(AutogradContext *, variable_list)
    {
        throw std::runtime_error(
            "losskit gives first derivatives only: a losskit gradient was differentiated again "
            "(create_graph=True through the loss); compute this loss with torch where its "
            "second derivatives are needed");
    }
};

// The value as a 0-dim tensor whose backward hands autograd the gradients
// the runtime wrote in forward, times the upstream gradient: uncopied when
// that is 1 (value.backward()), so that a leaf's .grad is the buffer itself.
struct Computed : public torch::autograd::Function<Computed> {
    static torch::Tensor forward(AutogradContext *ctx, at::TensorList inputs,
                                 const std::vector<torch::Tensor> *grads, double value,
                                 at::ScalarType dtype)
    {
        ctx->save_for_backward(*grads);
        ctx->saved_data["anchors"] = inputs.vec();
        return at::scalar_tensor(value, at::TensorOptions().dtype(dtype));
    }

    static variable_list backward(AutogradContext *ctx, variable_list go)
    {
        variable_list grads = ctx->get_saved_variables();
        const torch::Tensor &up = go[0];
        if (!up.defined()) {
            for (auto &g : grads)
                g = torch::Tensor();
        } else {
            // a Python number, as the ctypes path multiplies: each gradient
            // keeps its own dtype
            const double scale = up.item<double>();
            if (scale != 1.0)
                for (auto &g : grads)
                    g = g * scale;
        }
        if (torch::GradMode::is_enabled()) { // create_graph
            std::vector<torch::Tensor> anchors = ctx->saved_data["anchors"].toTensorVector();
            for (size_t i = 0; i < grads.size() && i < anchors.size(); i++)
                if (grads[i].defined() && anchors[i].requires_grad())
                    grads[i] = NoSecond::apply(grads[i], anchors[i]);
        }
        // the three non-tensor arguments of forward get no gradient
        grads.resize(grads.size() + 3);
        return grads;
    }
};

int dtype_code(at::ScalarType t)
{
    switch (t) {
    case at::kFloat: return LK_DTYPE_F32;
    case at::kDouble: return LK_DTYPE_F64;
    case at::kLong: return LK_DTYPE_I64;
    case at::kInt: return LK_DTYPE_I32;
    case at::kByte: return LK_DTYPE_U8;
    case at::kBool: return LK_DTYPE_BOOL;
    default: return -1;
    }
}

// One losskit.Loss's compiled caller.
class Caller {
  public:
    // eval: the address of lk_loss_eval; loss: the lk_loss handle; first:
    // the name of the loss's first slot (the value takes its dtype);
    // differentiable: the slot names with a gradient; max_grad_bytes: a
    // larger gradient goes to the Python path (its gradient pool)
    Caller(uintptr_t eval, uintptr_t loss, std::string first, std::vector<std::string> differentiable,
           int64_t max_grad_bytes)
        : eval_(reinterpret_cast<eval_fn>(eval)), loss_(reinterpret_cast<const lk_loss *>(loss)),
          first_(std::move(first)), diff_(std::move(differentiable)),
          max_grad_bytes_(max_grad_bytes)
    {
    }

    // names: a tuple of str, ts: a list of tensors, as long. None when the
    // call is not one this path takes, or the runtime refused it.
    py::object call(py::tuple names, py::list ts)
    {
        const Py_ssize_t n = PyTuple_GET_SIZE(names.ptr());
        if (n != PyList_GET_SIZE(ts.ptr()) || n > kMaxTensors)
            return py::none();
        const bool grad_mode = at::GradMode::is_enabled();
        lk_named_tensor in[kMaxTensors], gr[kMaxTensors];
        std::vector<torch::Tensor> grads;
        std::vector<torch::Tensor> wanting;
        size_t n_grads = 0;
        at::ScalarType value_type = at::kDouble;
        int64_t elements = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *o = PyList_GET_ITEM(ts.ptr(), i);
            if (!THPVariable_Check(o))
                return py::none();
            const torch::Tensor &t = THPVariable_Unpack(o);
            int code = dtype_code(t.scalar_type());
            if (code < 0 || !t.device().is_cpu() || t.layout() != at::kStrided ||
                !t.is_contiguous())
                return py::none();
            Py_ssize_t len;
            const char *name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(names.ptr(), i), &len);
            if (!name) {
                PyErr_Clear();
                return py::none();
            }
            const int64_t numel = t.numel();
            elements += numel;
            lk_tensor d = {numel ? t.data_ptr() : nullptr, code, static_cast<int32_t>(t.dim()),
                           t.sizes().data(), nullptr};
            in[i] = {name, d, nullptr};
            if (first_.compare(0, std::string::npos, name, len) == 0)
                value_type = t.scalar_type();
            if (!(grad_mode && t.requires_grad()))
                continue;
            if (!differentiable(name, len) || numel * t.element_size() > max_grad_bytes_)
                return py::none(); // the Python path raises, or pools the gradient
            grads.push_back(at::empty(t.sizes(), t.options().requires_grad(false)));
            wanting.push_back(t);
            lk_tensor g = {numel ? grads.back().data_ptr() : nullptr, code, d.ndim,
                           grads.back().sizes().data(), nullptr};
            gr[n_grads++] = {name, g, nullptr};
        }
        lk_eval_args args;
        std::memset(&args, 0, offsetof(lk_eval_args, errmsg) + 1);
        args.tensors = in;
        args.n_tensors = static_cast<size_t>(n);
        args.grads = n_grads ? gr : nullptr;
        args.n_grads = n_grads;
        args.grad_scale = 1.0;
        double value = 0.0;
        lk_status st;
        if (elements >= (1 << 16)) { // long enough that other Python threads should run
            py::gil_scoped_release nogil;
            st = eval_(loss_, &args, &value);
        } else {
            st = eval_(loss_, &args, &value);
        }
        if (st != LK_OK)
            return py::none();
        last_.clear();
        for (Py_ssize_t i = 0; i < n; i++)
            last_.push_back(reinterpret_cast<uintptr_t>(in[i].tensor.data));
        torch::Tensor out;
        if (grads.empty())
            out = at::scalar_tensor(value, at::TensorOptions().dtype(value_type));
        else
            out = Computed::apply(at::TensorList(wanting), &grads, value, value_type);
        return py::reinterpret_steal<py::object>(THPVariable_Wrap(std::move(out)));
    }

    // the data pointers handed to the runtime by the last call this path
    // made (0 for an empty tensor)
    std::vector<uintptr_t> last() const
    {
        return last_;
    }

  private:
    bool differentiable(const char *name, Py_ssize_t len) const
    {
        for (const auto &d : diff_)
            if (d.size() == static_cast<size_t>(len) && std::memcmp(d.data(), name, len) == 0)
                return true;
        return false;
    }

    eval_fn eval_;
    const lk_loss *loss_;
    std::string first_;
    std::vector<std::string> diff_;
    int64_t max_grad_bytes_;
    std::vector<uintptr_t> last_;
};

} // namespace

PYBIND11_MODULE(_fast, m)
{
    m.doc() = "losskit.Loss's compiled per-call path (see _fast.cpp)";
    py::class_<Caller>(m, "Caller")
        .def(py::init<uintptr_t, uintptr_t, std::string, std::vector<std::string>, int64_t>())
        .def("call", &Caller::call)
        .def("last", &Caller::last);
}
