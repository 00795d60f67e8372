//! The store's columns: CloudTrail's record fields, typed where practitioners filter on them.
//!
//! `userIdentity` and `tlsDetails` are structs with CloudTrail's field names, as CloudTrail Lake's
//! schema and the Athena CloudTrail table declare them:
//! <https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-user-identity.html>,
//! <https://docs.aws.amazon.com/awscloudtrail/latest/userguide/query-supported-event-schemas.html>,
//! <https://docs.aws.amazon.com/athena/latest/ug/create-cloudtrail-table.html>.
//! tlsDetails' three strings: <https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-record-contents.html>.
//! Every leaf is a string as logged (creationDate formats vary; mfaAuthenticated is "true"/"false").

use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A JSON string.
    Str,
    /// A JSON boolean.
    Bool,
    /// Any JSON value but `null`, kept as its text.
    Json,
    /// `eventTime`: a UTC timestamp.
    Time,
    /// A JSON object of known fields: an Arrow struct.
    Struct(Nested),
}

/// The struct columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nested {
    UserIdentity = 0,
    TlsDetails = 1,
}

impl Nested {
    pub const ALL: [Nested; 2] = [Nested::UserIdentity, Nested::TlsDetails];

    pub fn shape(self) -> &'static Shape {
        match self {
            Nested::UserIdentity => &USER_IDENTITY_SHAPE,
            Nested::TlsDetails => &TLS_DETAILS_SHAPE,
        }
    }
}

/// A field of a struct column.
#[derive(Debug)]
pub enum Node {
    /// A string leaf.
    Str(&'static str),
    /// A free-form leaf kept as its JSON text (`webIdFederationData.attributes`).
    Json(&'static str),
    /// A nested object of known fields.
    Struct(&'static str, &'static [Node]),
}

use Node::{Json as J, Str as S, Struct as T};

/// userIdentity per the CloudTrail userIdentity reference and CloudTrail Lake's schema (plus
/// `invokedByDelegate`, which real logs carry). Anything else goes to otherFields.
pub const USER_IDENTITY: &[Node] = &[
    S("type"),
    S("principalId"),
    S("arn"),
    S("accountId"),
    S("accessKeyId"),
    S("userName"),
    T(
        "sessionContext",
        &[
            T("attributes", &[S("creationDate"), S("mfaAuthenticated")]),
            T("sessionIssuer", &[S("type"), S("principalId"), S("arn"), S("accountId"), S("userName")]),
            T("webIdFederationData", &[S("federatedProvider"), J("attributes")]),
            S("sourceIdentity"),
            S("ec2RoleDelivery"),
            S("ec2IssuedInVPC"),
            S("assumedRoot"),
        ],
    ),
    S("invokedBy"),
    S("identityProvider"),
    S("credentialId"),
    T("onBehalfOf", &[S("userId"), S("identityStoreArn")]),
    T("inScopeOf", &[S("sourceArn"), S("sourceAccount"), S("issuerType"), S("credentialsIssuedTo")]),
    T("invokedByDelegate", &[S("accountId")]),
];

pub const TLS_DETAILS: &[Node] = &[S("tlsVersion"), S("cipherSuite"), S("clientProvidedHostHeader")];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Str,
    Json,
    Struct,
}

/// A struct column's fields flattened in preorder: node 0 is the column itself. Parsers and
/// builders address a field by its index here.
#[derive(Debug)]
pub struct Shape {
    pub nodes: Vec<FlatNode>,
    pub data_type: DataType,
}

#[derive(Debug)]
pub struct FlatNode {
    pub name: &'static str,
    pub kind: NodeKind,
    /// Indexes of the children (structs only), in field order.
    pub children: Vec<usize>,
}

impl Shape {
    fn compile(name: &'static str, fields: &'static [Node]) -> Shape {
        fn add(nodes: &mut Vec<FlatNode>, name: &'static str, node: Option<&'static [Node]>, kind: NodeKind) -> usize {
            let i = nodes.len();
            nodes.push(FlatNode { name, kind, children: Vec::new() });
            for child in node.unwrap_or_default() {
                let c = match child {
                    Node::Str(n) => add(nodes, n, None, NodeKind::Str),
                    Node::Json(n) => add(nodes, n, None, NodeKind::Json),
                    Node::Struct(n, f) => add(nodes, n, Some(f), NodeKind::Struct),
                };
                nodes[i].children.push(c);
            }
            i
        }
        let mut nodes = Vec::new();
        add(&mut nodes, name, Some(fields), NodeKind::Struct);
        let data_type = struct_type(fields);
        Shape { nodes, data_type }
    }

    /// The child of struct node `parent` named `name`.
    pub fn child(&self, parent: usize, name: &str) -> Option<usize> {
        self.nodes[parent].children.iter().copied().find(|&c| self.nodes[c].name == name)
    }

    /// Dotted paths of the string leaves (`sessionContext.sessionIssuer.arn`), for writer properties.
    pub fn leaf_paths(&self) -> Vec<Vec<&'static str>> {
        fn walk(s: &Shape, i: usize, path: &mut Vec<&'static str>, out: &mut Vec<Vec<&'static str>>) {
            for &c in &s.nodes[i].children {
                path.push(s.nodes[c].name);
                match s.nodes[c].kind {
                    NodeKind::Struct => walk(s, c, path, out),
                    _ => out.push(path.clone()),
                }
                path.pop();
            }
        }
        let mut out = Vec::new();
        walk(self, 0, &mut Vec::new(), &mut out);
        out
    }
}

fn struct_type(fields: &'static [Node]) -> DataType {
    DataType::Struct(Fields::from(
        fields
            .iter()
            .map(|n| match n {
                Node::Str(name) | Node::Json(name) => Field::new(*name, DataType::Utf8, true),
                Node::Struct(name, f) => Field::new(*name, struct_type(f), true),
            })
            .collect::<Vec<_>>(),
    ))
}

static USER_IDENTITY_SHAPE: LazyLock<Shape> = LazyLock::new(|| Shape::compile("userIdentity", USER_IDENTITY));
static TLS_DETAILS_SHAPE: LazyLock<Shape> = LazyLock::new(|| Shape::compile("tlsDetails", TLS_DETAILS));

/// The typed columns, in order. `otherFields` follows them (and, in stored files, `sourceLogFile`).
pub const COLUMNS: &[(&str, Kind)] = &[
    ("eventVersion", Kind::Str),
    ("eventTime", Kind::Time),
    ("eventSource", Kind::Str),
    ("eventName", Kind::Str),
    ("awsRegion", Kind::Str),
    ("sourceIPAddress", Kind::Str),
    ("userAgent", Kind::Str),
    ("errorCode", Kind::Str),
    ("errorMessage", Kind::Str),
    ("requestID", Kind::Str),
    ("eventID", Kind::Str),
    ("eventType", Kind::Str),
    ("apiVersion", Kind::Str),
    ("readOnly", Kind::Bool),
    ("managementEvent", Kind::Bool),
    ("recipientAccountId", Kind::Str),
    ("sharedEventID", Kind::Str),
    ("vpcEndpointId", Kind::Str),
    ("vpcEndpointAccountId", Kind::Str),
    ("eventCategory", Kind::Str),
    ("sessionCredentialFromConsole", Kind::Str),
    ("userIdentity", Kind::Struct(Nested::UserIdentity)),
    ("requestParameters", Kind::Json),
    ("responseElements", Kind::Json),
    ("additionalEventData", Kind::Json),
    ("resources", Kind::Json),
    ("serviceEventDetails", Kind::Json),
    ("tlsDetails", Kind::Struct(Nested::TlsDetails)),
    ("addendum", Kind::Json),
    ("edgeDeviceDetails", Kind::Json),
    ("insightDetails", Kind::Json),
    ("eventContext", Kind::Json),
];
pub const OTHER_FIELDS: &str = "otherFields";
/// Provenance: the log file a row came from (`s3://bucket/key` or an absolute path).
pub const SOURCE_LOG_FILE: &str = "sourceLogFile";
pub(crate) const EVENT_VERSION: usize = 0;
pub(crate) const EVENT_ID: usize = 10;

fn column_field(name: &str, kind: Kind) -> Field {
    match kind {
        Kind::Str | Kind::Json => Field::new(name, DataType::Utf8, true),
        Kind::Bool => Field::new(name, DataType::Boolean, true),
        Kind::Time => Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Kind::Struct(n) => Field::new(name, n.shape().data_type.clone(), true),
    }
}

/// The columns a parsed file yields: [`COLUMNS`] then `otherFields`.
pub static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields: Vec<Field> = COLUMNS.iter().map(|(name, kind)| column_field(name, *kind)).collect();
    fields.push(Field::new(OTHER_FIELDS, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
});

/// The columns of a stored Parquet file: [`SCHEMA`] then `sourceLogFile` (dictionary-encoded:
/// one value per file costs almost nothing).
pub static STORE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields: Vec<Field> = SCHEMA.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(
        SOURCE_LOG_FILE,
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        false,
    ));
    Arc::new(Schema::new(fields))
});

/// The index of a field's column in [`COLUMNS`] (a `match`: this runs for every field read).
pub(crate) fn column_index(name: &str) -> Option<usize> {
    Some(match name {
        "eventVersion" => 0,
        "eventTime" => 1,
        "eventSource" => 2,
        "eventName" => 3,
        "awsRegion" => 4,
        "sourceIPAddress" => 5,
        "userAgent" => 6,
        "errorCode" => 7,
        "errorMessage" => 8,
        "requestID" => 9,
        "eventID" => 10,
        "eventType" => 11,
        "apiVersion" => 12,
        "readOnly" => 13,
        "managementEvent" => 14,
        "recipientAccountId" => 15,
        "sharedEventID" => 16,
        "vpcEndpointId" => 17,
        "vpcEndpointAccountId" => 18,
        "eventCategory" => 19,
        "sessionCredentialFromConsole" => 20,
        "userIdentity" => 21,
        "requestParameters" => 22,
        "responseElements" => 23,
        "additionalEventData" => 24,
        "resources" => 25,
        "serviceEventDetails" => 26,
        "tlsDetails" => 27,
        "addendum" => 28,
        "edgeDeviceDetails" => 29,
        "insightDetails" => 30,
        "eventContext" => 31,
        _ => return None,
    })
}
