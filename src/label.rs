//! One way to turn an enum into a label: the [`labels!`] macro, and `label()` as the one name.
//!
//! Counters, log fields, control-socket output and Prometheus label values all name things
//! by short snake_case strings. Every module that owns such a vocabulary declares it with
//! [`labels!`], which writes the enum, its `ALL` list (to pre-register every label value) and
//! `label()`. Each enum is also a Prometheus label value, so `metrics` uses a module's own enum
//! in its label sets instead of a mirror of it. An enum whose variants carry data (and so
//! cannot use the macro) names its label method `label()` too.
//!
//! There is no `Label` trait: nothing is generic over label enums (Prometheus encoding is
//! written by the macro), and a trait with no generic user would be dead code.
//!
//! The strings are an interface: dashboards, alert rules and tests match them byte for byte.

/// Declares a fieldless enum and its labels:
///
/// ```ignore
/// labels! {
///     /// Why a datagram was dropped.
///     pub enum DropReason {
///         /// It did not parse.
///         Malformed => "malformed",
///         NotReply => "not_reply",
///     }
/// }
/// ```
///
/// The enum derives `Debug, Clone, Copy, PartialEq, Eq, Hash`; more derives go on it as
/// attributes. It gets `ALL` (every value, in declaration order), `label()` and
/// `prometheus_client`'s `EncodeLabelValue` (the label).
macro_rules! labels {
    ($(#[$m:meta])* $vis:vis enum $name:ident {
        $($(#[$vm:meta])* $var:ident => $s:literal),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vm])* $var,)+ }

        impl $name {
            /// Every value, in declaration order (to pre-register labels, for docs and tests).
            #[allow(dead_code, reason = "generated for every enum; not every enum pre-registers")]
            $vis const ALL: &'static [$name] = &[$($name::$var,)+];

            /// The label: metric label value, log field, control output (see `crate::label`).
            $vis const fn label(self) -> &'static str {
                match self { $($name::$var => $s,)+ }
            }
        }

        impl ::prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut ::prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> Result<(), std::fmt::Error> {
                ::prometheus_client::encoding::EncodeLabelValue::encode(&$name::label(*self), encoder)
            }
        }
    };
}

pub(crate) use labels;

#[cfg(test)]
mod tests {
    super::labels! {
        /// A test vocabulary.
        enum Colour {
            /// Documented variant.
            Red => "red",
            DarkBlue => "dark_blue",
        }
    }

    #[test]
    fn all_is_declaration_order_and_labels_are_the_literals() {
        assert_eq!(Colour::ALL, &[Colour::Red, Colour::DarkBlue]);
        let names: Vec<&str> = Colour::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(names, ["red", "dark_blue"]);
    }

    #[test]
    fn label_is_the_prometheus_label_value() {
        use prometheus_client::encoding::EncodeLabelSet;
        use prometheus_client::encoding::text::encode;
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::registry::Registry;

        #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct L {
            colour: Colour,
        }
        let f = Family::<L, Counter>::default();
        f.get_or_create(&L {
            colour: Colour::DarkBlue,
        })
        .inc();
        let mut r = Registry::default();
        r.register("t", "test", f);
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        assert!(out.contains("t_total{colour=\"dark_blue\"} 1"), "{out}");
    }
}
